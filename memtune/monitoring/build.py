"""The three memtune dashboards as data; ``python -m memtune.monitoring.build`` writes their JSON.

Host overview (``memtune-host``): a fleet row (hosts, top 10 VMs by stall and by reclaimed memory,
free memory / minFree per host) and a row per host (repeated over ``$instance``). VM drill-down
(``memtune-vm``): the ``vm`` variable starts on the 10 VMs that stall most. Tuner progress
(``memtune-tuner``). Heavy expressions come from the recording rules in ``rules/memtune.rules.yml``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from memtune.monitoring.grafana import (
    FREE_RATIO_THRESHOLDS,
    INSTANCE,
    STATE_MAPPINGS,
    STATE_THRESHOLDS,
    dashboard,
    override,
    panel,
    query_variable,
    row,
    stat,
    table,
    target,
    targets,
    timeseries,
)

I = INSTANCE                       # noqa: E741 - the host filter every query carries
RATE = "$__rate_interval"
HOSTS = query_variable("instance", "Host", "label_values(memtune_host_memory_bytes, instance)")
# the drill-down's VMs: All is the 10 VMs that stall most on the selected hosts (not all 256 of `large`)
TOP_VMS = query_variable(
    "vm",
    "VM (top 10 by stall)",
    f"query_result(topk(10, memtune:vm_stall:ratio_rate1m{{{I}}}))",
    regex='/vm="([^"]+)"/',
)


def per_sim_second(metric: str, by: str = "instance", select: str = I) -> str:
    """Rate of ``metric`` per simulated second, per host (``by`` keeps more labels, e.g. ``instance, vm``)."""
    return (
        f"sum by ({by}) (rate({metric}{{{select}}}[{RATE}])) / on (instance) group_left "
        f"sum by (instance) (rate(memtune_host_simulated_seconds_total{{{I}}}[{RATE}]))"
    )


def fleet_row(y: int) -> list[dict]:
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
    return [
        row("Fleet", y),
        table(
            "Hosts",
            "One row per memtune host: memory state, free memory as a share of minFree, VMs, and the "
            "share of time its VMs stalled on memory over the last minute.",
            (0, y + 1, 12, 8),
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
        ),
        timeseries(
            "Free memory / minFree per host",
            "Free memory as a share of minFree; the lines are where the "
            "states begin: clear below 100 %, soft below 64 %, hard below 32 %, low below 16 %.",
            (12, y + 1, 12, 8),
            targets((f"memtune:host_free:ratio_min_free{{{I}}}", "{{instance}}")),
            unit="percentunit",
            defaults={
                "thresholds": FREE_RATIO_THRESHOLDS,
                "min": 0,
                "custom": {"thresholdsStyle": {"mode": "line"}},
            },
        ),
        table(
            "Top 10 VMs by stall",
            "The VMs that waited longest on memory over the last minute (share of their "
            "running time), across the selected hosts.",
            (0, y + 9, 12, 8),
            [target(f"topk(10, memtune:vm_stall:ratio_rate1m{{{I}}})", instant=True, table=True)],
            unit="percentunit",
            rename={"instance": "Host", "vm": "VM", "Value": "Stall"},
            sort="Stall",
        ),
        table(
            "Top 10 VMs by reclaimed memory",
            "Memory taken back from each VM by ballooning, compression and "
            "hypervisor swap (MCTLSZ + ZIP + SWCUR), across the selected hosts.",
            (12, y + 9, 12, 8),
            [target(f"topk(10, memtune:vm_reclaimed:bytes{{{I}}})", instant=True, table=True)],
            unit="bytes",
            rename={"instance": "Host", "vm": "VM", "Value": "Reclaimed"},
            sort="Reclaimed",
        ),
    ]


def host_state_panels(y: int) -> list[dict]:
    state = {"mappings": STATE_MAPPINGS, "thresholds": STATE_THRESHOLDS, "color": {"mode": "thresholds"}}
    return [
        stat(
            "Memory state",
            "Current memory state from free memory as a share of minFree (esxtop 'state').",
            (0, y, 4, 6),
            [target(f"memtune:host_state:code{{{I}}}", "{{instance}}", instant=True)],
            unit="none",
            defaults=state,
        ),
        panel(
            "state-timeline",
            "Memory state over time",
            "The state after each scrape.",
            (4, y, 12, 6),
            targets((f"memtune:host_state:code{{{I}}}", "{{instance}}")),
            unit="none",
            defaults={**state, "custom": {"fillOpacity": 80, "lineWidth": 0}},
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
        timeseries(
            "Free memory vs minFree thresholds",
            "Free machine memory against minFree and the soft, hard "
            "and low thresholds (64, 32, 16 % of minFree).",
            (0, y + 6, 12, 8),
            targets(
                (f"memtune_host_free_bytes{{{I}}}", "{{instance}} free"),
                (f"memtune_host_min_free_bytes{{{I}}}", "{{instance}} minFree (clear below)"),
                (f"memtune_host_min_free_bytes{{{I}}} * 0.64", "{{instance}} soft (64 %)"),
                (f"memtune_host_min_free_bytes{{{I}}} * 0.32", "{{instance}} hard (32 %)"),
                (f"memtune_host_min_free_bytes{{{I}}} * 0.16", "{{instance}} low (16 %)"),
            ),
            unit="bytes",
        ),
        panel(
            "bargauge",
            "Share of time in each state (this run)",
            "Simulated time in each state since warm-up.",
            (12, y + 6, 12, 8),
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
        ),
    ]


def host_memory_panels(y: int) -> list[dict]:
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


def vm_drilldown() -> dict:
    vm = f'{I}, vm=~"$vm"'
    who = "{{instance}} {{vm}}"

    def ts(
        title: str,
        desc: str,
        grid: tuple[int, int, int, int],
        items: list[tuple[str, str]],
        unit: str = "bytes",
    ) -> dict:
        return timeseries(title, desc, grid, targets(*items), unit=unit)

    def gauge(metric: str, what: str = "") -> tuple[str, str]:
        return f"{metric}{{{vm}}}", f"{who}{what}"

    def rate(metric: str) -> str:
        return f"rate({metric}{{{vm}}}[{RATE}])"

    panels = [
        ts(
            "Consumed (CNSM)",
            "Machine memory each VM consumes.",
            (0, 0, 12, 8),
            [gauge("memtune_vm_consumed_bytes")],
        ),
        ts(
            "Allocation target (TGT)",
            "Share-based target with the idle memory tax.",
            (12, 0, 12, 8),
            [gauge("memtune_vm_target_bytes")],
        ),
        ts(
            "Active estimate (TCHD)",
            "Working set estimated by sampling.",
            (0, 8, 12, 8),
            [gauge("memtune_vm_active_bytes")],
        ),
        ts(
            "Granted (GRANT)",
            "Guest memory backed by machine memory or shared.",
            (12, 8, 12, 8),
            [gauge("memtune_vm_granted_bytes")],
        ),
        ts(
            "Reclaimed from the VM",
            "Ballooned, compressed and swapped guest memory.",
            (0, 16, 12, 8),
            [
                gauge("memtune_vm_ballooned_bytes", " ballooned"),
                gauge("memtune_vm_compressed_bytes", " compressed"),
                gauge("memtune_vm_swapped_bytes", " swapped"),
            ],
        ),
        ts(
            "Sharing",
            "Shared guest memory, what sharing saves, and zero pages.",
            (12, 16, 12, 8),
            [
                gauge("memtune_vm_shared_bytes", " shared"),
                gauge("memtune_vm_shared_saved_bytes", " saved"),
                gauge("memtune_vm_zero_bytes", " zero"),
            ],
        ),
        ts(
            "Stall",
            "Share of the VM's time stalled on memory: over the last minute, and over the whole run.",
            (0, 24, 12, 8),
            [
                (f"memtune:vm_stall:ratio_rate1m{{{vm}}}", f"{who} last minute"),
                gauge("memtune_vm_stall_ratio", " whole run"),
            ],
            unit="percentunit",
        ),
        ts(
            "Extra latency per touch (p99, mean)",
            "Latency beyond a DRAM access per touch.",
            (12, 24, 12, 8),
            [
                (
                    f"histogram_quantile(0.99, sum by (instance, vm, le) "
                    f"({rate('memtune_vm_touch_extra_latency_seconds_bucket')}))",
                    f"{who} p99",
                ),
                (
                    f"{rate('memtune_vm_touch_extra_latency_seconds_sum')} / "
                    f"{rate('memtune_vm_touch_extra_latency_seconds_count')}",
                    f"{who} mean",
                ),
            ],
            unit="s",
        ),
        ts(
            "Faults per touch by kind",
            "Touches that faulted, by the state of the page touched.",
            (0, 32, 12, 8),
            [
                (
                    f"sum by (instance, vm, kind) ({rate('memtune_vm_faults_total')}) / on (instance, vm) "
                    f"group_left "
                    f"sum by (instance, vm) ({rate('memtune_vm_touches_total')})",
                    f"{who} {{{{kind}}}}",
                )
            ],
            unit="percentunit",
        ),
        ts(
            "Touches per simulated second",
            "Guest memory touches (4 KiB) per simulated second.",
            (12, 32, 12, 8),
            [(per_sim_second("memtune_vm_touches_total", "instance, vm", vm), who)],
            unit="short",
        ),
        ts(
            "Paging traffic per simulated second",
            "Bytes per simulated second moved for this VM.",
            (0, 40, 24, 8),
            [
                (per_sim_second(f"memtune_vm_{m}_bytes_total", "instance, vm", vm), f"{who} {label}")
                for m, label in (
                    ("swap_out", "swap-out"),
                    ("swap_in", "swap-in"),
                    ("compression", "compress"),
                    ("decompression", "decompress"),
                    ("guest_swap_in", "guest swap-in"),
                )
            ],
            unit="Bps",
        ),
        panel(
            "bargauge",
            "Configuration",
            "Configured memory, reservation, limit and overhead.",
            (0, 48, 24, 8),
            [
                target(e, lg, chr(ord("A") + i), instant=True)
                for i, (e, lg) in enumerate(
                    [
                        gauge("memtune_vm_configured_bytes", " configured (MEMSZ)"),
                        gauge("memtune_vm_reservation_bytes", " reservation"),
                        gauge("memtune_vm_limit_bytes", " limit"),
                        gauge("memtune_vm_overhead_bytes", " overhead (OVHD)"),
                    ]
                )
            ],
            unit="bytes",
            options={
                "orientation": "horizontal",
                "displayMode": "basic",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
        ),
    ]
    return dashboard(
        "memtune-vm",
        "memtune / VM drill-down",
        "Per-VM memory (esxtop columns), reclamation, sharing, stall and latency; starts on the 10 VMs "
        "that stall most. Each series is one VM on one host.",
        [HOSTS, TOP_VMS],
        panels,
    )


def tuner() -> dict:
    t = 'instance=~"$instance"'
    runs = query_variable("instance", "Tuner", "label_values(memtune_tuner_evaluations_total, instance)")
    panels = [
        stat(
            "Evaluations",
            "Policies simulated and points rejected before simulation.",
            (0, 0, 8, 5),
            targets(
                (f"memtune_tuner_evaluations_total{{{t}}}", "{{instance}} simulated"),
                (f"memtune_tuner_infeasible_total{{{t}}}", "{{instance}} infeasible"),
                instant=True,
            ),
        ),
        stat(
            "Best objective",
            "Lowest objective so far (lower is better).",
            (8, 0, 8, 5),
            targets((f"memtune_tuner_best_objective{{{t}}}", "{{instance}}"), instant=True),
        ),
        stat(
            "Share of points infeasible",
            "Infeasible points / all points asked.",
            (16, 0, 8, 5),
            targets(
                (
                    f"memtune_tuner_infeasible_total{{{t}}} / (memtune_tuner_infeasible_total{{{t}}} + "
                    f"memtune_tuner_evaluations_total{{{t}}})",
                    "{{instance}}",
                ),
                instant=True,
            ),
            unit="percentunit",
        ),
        timeseries(
            "Objective: current vs best",
            "Objective of the latest evaluation and the best so far.",
            (0, 5, 24, 8),
            targets(
                (f"memtune_tuner_current_objective{{{t}}}", "{{instance}} current"),
                (f"memtune_tuner_best_objective{{{t}}}", "{{instance}} best"),
            ),
        ),
        timeseries(
            "Evaluations per minute",
            "Throughput of the tuning run.",
            (0, 13, 24, 8),
            targets(
                (f"rate(memtune_tuner_evaluations_total{{{t}}}[{RATE}]) * 60", "{{instance}} simulated"),
                (f"rate(memtune_tuner_infeasible_total{{{t}}}[{RATE}]) * 60", "{{instance}} infeasible"),
            ),
        ),
    ]
    return dashboard(
        "memtune-tuner",
        "memtune / Tuner progress",
        "Progress of memtune optimize runs: evaluations, objective, infeasible share.",
        [runs],
        panels,
    )


DASHBOARDS = {"host-overview.json": host_overview, "vm-drilldown.json": vm_drilldown, "tuner.json": tuner}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the dashboards into ``memtune/monitoring/dashboards/`` (or the folder given)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).parent / "dashboards"
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (out / name).write_text(render(name))


if __name__ == "__main__":
    main()
