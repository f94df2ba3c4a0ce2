"""The host overview dashboard (``memtune-host``): a fleet row, then a row per host.

Fleet: hosts with their memory state and free memory / minFree, the top 10 VMs by stall and by
reclaimed memory. Per host (repeated over ``$instance``): memory state and the minFree thresholds
it comes from (vSphere 6 states: clear below 100 % of minFree, soft 64 %, hard 32 %, low 16 %;
vSphere Resource Management guide, "Memory Reclamation"), reclamation by technique, page sharing,
stall, latency, faults and paging traffic. Heavy expressions are recording rules
(``rules/memtune.rules.yml``).
"""

from __future__ import annotations

from memtune.monitoring.grafana import (
    FREE_RATIO_THRESHOLDS,
    STATE_MAPPINGS,
    STATE_THRESHOLDS,
    dashboard,
    override,
    panel,
    row,
    stat,
    table,
    target,
    targets,
    timeseries,
)
from memtune.monitoring.queries import HOSTS, RATE, I, per_sim_second

# --- fleet row -------------------------------------------------------------------------------------


def fleet_row(y: int) -> list[dict]:
    """The fleet row at height ``y``: hosts, free memory / minFree per host, the top 10 VMs."""
    return [row("Fleet", y), hosts_table(y + 1), free_ratio_per_host(y + 1), *top_vm_tables(y + 9)]


def hosts_table(y: int) -> dict:
    """One row per host: state and free / minFree coloured by the state they mean, VMs, stall."""
    state_col = override(
        "State",
        mappings=STATE_MAPPINGS,
        thresholds=STATE_THRESHOLDS,
        unit="none",
        custom={"cellOptions": {"type": "color-background"}},
    )
    ratio_col = override(
        "Free / minFree",
        unit="percentunit",
        thresholds=FREE_RATIO_THRESHOLDS,
        custom={"cellOptions": {"type": "color-background"}},
    )
    return table(
        "Hosts",
        "One row per memtune host: memory state, free memory as a share of minFree, VMs, and the "
        "share of time its VMs stalled on memory over the last minute.",
        (0, y, 12, 8),
        targets(
            (f"memtune:host_state:code{{{I}}}", ""),
            (f"memtune:host_free:ratio_min_free{{{I}}}", ""),
            (f"count by (instance, job) (memtune_vm_configured_bytes{{{I}}})", ""),
            (f"memtune:host_stall:ratio_rate1m{{{I}}}", ""),
            instant=True,
            table=True,
        ),
        overrides=[state_col, ratio_col, override("Stall", unit="percentunit")],
        rename={
            "instance": "Host",
            "Value #A": "State",
            "Value #B": "Free / minFree",
            "Value #C": "VMs",
            "Value #D": "Stall",
        },
    )


def free_ratio_per_host(y: int) -> dict:
    """Free memory / minFree per host, with lines where the states begin."""
    return timeseries(
        "Free memory / minFree per host",
        "Free memory as a share of minFree; the lines are where the "
        "states begin: clear below 100 %, soft below 64 %, hard below 32 %, low below 16 %.",
        (12, y, 12, 8),
        targets((f"memtune:host_free:ratio_min_free{{{I}}}", "{{instance}}")),
        unit="percentunit",
        defaults={
            "thresholds": FREE_RATIO_THRESHOLDS,
            "min": 0,
            "custom": {"thresholdsStyle": {"mode": "line"}},
        },
    )


def top_vm_tables(y: int) -> list[dict]:
    """The 10 VMs that stall most and the 10 with the most memory reclaimed, across hosts."""
    return [
        table(
            "Top 10 VMs by stall",
            "The VMs that waited longest on memory over the last minute (share of their "
            "running time), across the selected hosts.",
            (0, y, 12, 8),
            [target(f"topk(10, memtune:vm_stall:ratio_rate1m{{{I}}})", instant=True, table=True)],
            unit="percentunit",
            rename={"instance": "Host", "vm": "VM", "Value": "Stall"},
            sort="Stall",
        ),
        table(
            "Top 10 VMs by reclaimed memory",
            "Memory taken back from each VM by ballooning, compression and "
            "hypervisor swap (MCTLSZ + ZIP + SWCUR), across the selected hosts.",
            (12, y, 12, 8),
            [target(f"topk(10, memtune:vm_reclaimed:bytes{{{I}}})", instant=True, table=True)],
            unit="bytes",
            rename={"instance": "Host", "vm": "VM", "Value": "Reclaimed"},
            sort="Reclaimed",
        ),
    ]


# --- per host: memory state ------------------------------------------------------------------------

STATE_FIELD = {"mappings": STATE_MAPPINGS, "thresholds": STATE_THRESHOLDS, "color": {"mode": "thresholds"}}


def host_state_panels(y: int) -> list[dict]:
    """The host's memory state now and over time, and free memory against minFree's thresholds."""
    return [*state_now_panels(y), free_vs_thresholds(y + 6), time_in_state(y + 6)]


def state_now_panels(y: int) -> list[dict]:
    """Current state (stat), state over time (timeline) and free / minFree (gauge)."""
    return [
        stat(
            "Memory state",
            "Current memory state from free memory as a share of minFree (esxtop 'state').",
            (0, y, 4, 6),
            [target(f"memtune:host_state:code{{{I}}}", "{{instance}}", instant=True)],
            unit="none",
            defaults=STATE_FIELD,
        ),
        panel(
            "state-timeline",
            "Memory state over time",
            "The state after each scrape.",
            (4, y, 12, 6),
            targets((f"memtune:host_state:code{{{I}}}", "{{instance}}")),
            unit="none",
            defaults={**STATE_FIELD, "custom": {"fillOpacity": 80, "lineWidth": 0}},
            options={
                "showValue": "never",
                "mergeValues": True,
                "rowHeight": 0.8,
                "legend": {"showLegend": False},
            },
        ),
        panel(
            "gauge",
            "Free memory / minFree",
            "Free memory as a share of minFree, coloured by the state it "
            "means (thresholds at 16, 32, 64 and 100 %).",
            (16, y, 8, 6),
            [target(f"memtune:host_free:ratio_min_free{{{I}}}", "{{instance}}", instant=True)],
            unit="percentunit",
            defaults={"thresholds": FREE_RATIO_THRESHOLDS, "min": 0, "max": 2},
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showThresholdMarkers": True,
            },
        ),
    ]


def free_vs_thresholds(y: int) -> dict:
    """Free machine memory against minFree and the soft, hard and low thresholds."""
    return timeseries(
        "Free memory vs minFree thresholds",
        "Free machine memory against minFree and the soft, hard "
        "and low thresholds (64, 32, 16 % of minFree).",
        (0, y, 12, 8),
        targets(
            (f"memtune_host_free_bytes{{{I}}}", "{{instance}} free"),
            (f"memtune_host_min_free_bytes{{{I}}}", "{{instance}} minFree (clear below)"),
            (f"memtune_host_min_free_bytes{{{I}}} * 0.64", "{{instance}} soft (64 %)"),
            (f"memtune_host_min_free_bytes{{{I}}} * 0.32", "{{instance}} hard (32 %)"),
            (f"memtune_host_min_free_bytes{{{I}}} * 0.16", "{{instance}} low (16 %)"),
        ),
        unit="bytes",
    )


def time_in_state(y: int) -> dict:
    """Share of simulated time in each state since warm-up."""
    return panel(
        "bargauge",
        "Share of time in each state (this run)",
        "Simulated time in each state since warm-up.",
        (12, y, 12, 8),
        targets(
            (
                f"memtune_host_state_seconds_total{{{I}}} / ignoring(state) group_left "
                f"sum without (state) (memtune_host_state_seconds_total{{{I}}})",
                "{{instance}} {{state}}",
            )
        ),
        unit="percentunit",
        defaults={"min": 0, "max": 1},
        options={
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    )


# --- per host: memory and activity -----------------------------------------------------------------


def host_memory_panels(y: int) -> list[dict]:
    """Reclamation by technique, page-sharing savings, host memory and stall."""
    def total(metric: str, extra: str = "") -> str:
        return f"sum by (instance) ({metric}{{{I}{extra}}})"

    return [
        timeseries(
            "Reclamation by technique",
            "Memory taken from VMs by each technique on this host.",
            (0, y, 12, 8),
            targets(
                (total("memtune_vm_ballooned_bytes"), "{{instance}} ballooned (MCTLSZ)"),
                (total("memtune_vm_compressed_bytes"), "{{instance}} compressed (ZIP)"),
                (total("memtune_vm_swapped_bytes"), "{{instance}} swapped (SWCUR)"),
                (total("memtune_vm_shared_saved_bytes"), "{{instance}} saved by sharing (SHRDSVD)"),
            ),
            unit="bytes",
        ),
        timeseries(
            "Page sharing savings",
            "Shared guest memory, what sharing saves, zero pages, and the frames behind shared pages.",
            (12, y, 12, 8),
            targets(
                (total("memtune_vm_shared_bytes"), "{{instance}} shared (SHRD)"),
                (total("memtune_vm_shared_saved_bytes"), "{{instance}} saved (SHRDSVD)"),
                (total("memtune_vm_zero_bytes"), "{{instance}} zero pages (ZERO)"),
                (total("memtune_host_pool_bytes", ', pool="tps"'), "{{instance}} shared frames"),
            ),
            unit="bytes",
        ),
        timeseries(
            "Host memory",
            "Physical memory against what the VMs are configured with, consume, touch and are allotted.",
            (0, y + 8, 12, 8),
            targets(
                (f"memtune_host_memory_bytes{{{I}}}", "{{instance}} physical"),
                (total("memtune_vm_configured_bytes"), "{{instance}} configured (all VMs)"),
                (total("memtune_vm_consumed_bytes"), "{{instance}} consumed"),
                (total("memtune_vm_active_bytes"), "{{instance}} active (estimate)"),
                (total("memtune_vm_target_bytes"), "{{instance}} allocation targets"),
                (f"memtune_host_overhead_bytes{{{I}}}", "{{instance}} VM overhead"),
                (f"memtune_host_reserved_bytes{{{I}}}", "{{instance}} reserved"),
            ),
            unit="bytes",
        ),
        timeseries(
            "Stall (share of time VMs wait on memory)",
            "Over the last minute: all VMs of the host together, and its worst VM.",
            (12, y + 8, 12, 8),
            targets(
                (f"memtune:host_stall:ratio_rate1m{{{I}}}", "{{instance}} all VMs"),
                (f"max by (instance) (memtune:vm_stall:ratio_rate1m{{{I}}})", "{{instance}} worst VM"),
            ),
            unit="percentunit",
        ),
    ]


def host_activity_panels(y: int) -> list[dict]:
    """Extra latency per touch, faults per touch by kind, paging traffic."""
    mean = (
        f"sum by (instance) (rate(memtune_vm_touch_extra_latency_seconds_sum{{{I}}}[{RATE}])) / "
        f"sum by (instance) (rate(memtune_vm_touch_extra_latency_seconds_count{{{I}}}[{RATE}]))"
    )
    faults = (
        f"sum by (instance, kind) (rate(memtune_vm_faults_total{{{I}}}[{RATE}])) / on (instance) "
        f"group_left sum by (instance) (rate(memtune_vm_touches_total{{{I}}}[{RATE}]))"
    )
    return [
        timeseries(
            "Extra latency per touch",
            "Latency a touch pays beyond a DRAM access: p99 over the last "
            "minute (recording rule) and the mean.",
            (0, y, 8, 8),
            targets(
                (f"memtune:host_touch_extra_latency_seconds:p99_rate1m{{{I}}}", "{{instance}} p99"),
                (mean, "{{instance}} mean"),
            ),
            unit="s",
        ),
        timeseries(
            "Faults per touch by kind",
            "Touches that faulted, by the state of the page touched.",
            (8, y, 8, 8),
            targets((faults, "{{instance}} {{kind}}")),
            unit="percentunit",
        ),
        timeseries(
            "Paging traffic per simulated second",
            "Bytes per simulated second moved by hypervisor swap, "
            "compression and the guests' own swap after ballooning.",
            (16, y, 8, 8),
            targets(
                (per_sim_second("memtune_vm_swap_out_bytes_total"), "{{instance}} hypervisor swap-out"),
                (per_sim_second("memtune_vm_swap_in_bytes_total"), "{{instance}} hypervisor swap-in"),
                (per_sim_second("memtune_vm_compression_bytes_total"), "{{instance}} compression"),
                (per_sim_second("memtune_vm_decompression_bytes_total"), "{{instance}} decompression"),
                (
                    per_sim_second("memtune_vm_guest_swap_in_bytes_total"),
                    "{{instance}} guest swap-in after ballooning",
                ),
            ),
            unit="Bps",
        ),
    ]


def host_overview() -> dict:
    """The dashboard: the fleet row, then a row per host repeated over ``$instance``."""
    panels = fleet_row(0)
    panels.append(row("Host $instance", 17, repeat="instance"))
    panels += host_state_panels(18) + host_memory_panels(32) + host_activity_panels(48)
    return dashboard(
        "memtune-host",
        "memtune / Host overview",
        "Fleet view (hosts, top VMs by stall and by reclaimed memory) and, per host, memory states, "
        "free memory vs minFree, reclamation by technique and page-sharing savings.",
        [HOSTS],
        panels,
    )
