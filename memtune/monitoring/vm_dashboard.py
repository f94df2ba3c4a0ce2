"""The VM drill-down dashboard (``memtune-vm``): one VM's memory as esxtop shows it, and why it waits.

Panels name the columns of esxtop's memory screen (``m``) they stand for: MEMSZ, TCHD, GRANT, CNSM,
TGT, MCTLSZ, ZIP, SWCUR, SHRD, SHRDSVD, ZERO, OVHD (the mapping is in docs/metrics.md). The ``vm``
variable starts on the 10 VMs that stall most; each series is one VM on one host.
"""

from __future__ import annotations

from memtune.monitoring.grafana import dashboard, panel, target, targets, timeseries
from memtune.monitoring.queries import HOSTS, RATE, TOP_VMS, I, per_sim_second

VM = f'{I}, vm=~"$vm"'             # the selected VMs on the selected hosts
WHO = "{{instance}} {{vm}}"         # legend: which VM on which host


def vm_panel(
    title: str,
    desc: str,
    grid: tuple[int, int, int, int],
    items: list[tuple[str, str]],
    unit: str = "bytes",
) -> dict:
    """A time series of ``(expr, legend)`` items, bytes unless told."""
    return timeseries(title, desc, grid, targets(*items), unit=unit)


def vm_series(metric: str, what: str = "") -> tuple[str, str]:
    """``metric`` of the selected VMs, legend ``host vm`` plus ``what``."""
    return f"{metric}{{{VM}}}", f"{WHO}{what}"


def vm_rate(metric: str) -> str:
    """Per-second rate of ``metric`` for the selected VMs."""
    return f"rate({metric}{{{VM}}}[{RATE}])"


def memory_panels() -> list[dict]:
    """Consumed, allocation target, active estimate and granted memory (CNSM, TGT, TCHD, GRANT)."""
    return [
        vm_panel(
            "Consumed (CNSM)",
            "Machine memory each VM consumes.",
            (0, 0, 12, 8),
            [vm_series("memtune_vm_consumed_bytes")],
        ),
        vm_panel(
            "Allocation target (TGT)",
            "Share-based target with the idle memory tax.",
            (12, 0, 12, 8),
            [vm_series("memtune_vm_target_bytes")],
        ),
        vm_panel(
            "Active estimate (TCHD)",
            "Working set estimated by sampling.",
            (0, 8, 12, 8),
            [vm_series("memtune_vm_active_bytes")],
        ),
        vm_panel(
            "Granted (GRANT)",
            "Guest memory backed by machine memory or shared.",
            (12, 8, 12, 8),
            [vm_series("memtune_vm_granted_bytes")],
        ),
    ]


def reclamation_panels() -> list[dict]:
    """Memory reclaimed from the VM (MCTLSZ, ZIP, SWCUR) and what sharing saves (SHRD, SHRDSVD, ZERO)."""
    return [
        vm_panel(
            "Reclaimed from the VM",
            "Ballooned, compressed and swapped guest memory.",
            (0, 16, 12, 8),
            [
                vm_series("memtune_vm_ballooned_bytes", " ballooned"),
                vm_series("memtune_vm_compressed_bytes", " compressed"),
                vm_series("memtune_vm_swapped_bytes", " swapped"),
            ],
        ),
        vm_panel(
            "Sharing",
            "Shared guest memory, what sharing saves, and zero pages.",
            (12, 16, 12, 8),
            [
                vm_series("memtune_vm_shared_bytes", " shared"),
                vm_series("memtune_vm_shared_saved_bytes", " saved"),
                vm_series("memtune_vm_zero_bytes", " zero"),
            ],
        ),
    ]


def waiting_panels() -> list[dict]:
    """Why the VM waits: stall, extra latency per touch, faults per touch by kind, touch rate."""
    return [
        vm_panel(
            "Stall",
            "Share of the VM's time stalled on memory: over the last minute, and over the whole run.",
            (0, 24, 12, 8),
            [
                (f"memtune:vm_stall:ratio_rate1m{{{VM}}}", f"{WHO} last minute"),
                vm_series("memtune_vm_stall_ratio", " whole run"),
            ],
            unit="percentunit",
        ),
        vm_panel(
            "Extra latency per touch (p99, mean)",
            "Latency beyond a DRAM access per touch.",
            (12, 24, 12, 8),
            [
                (
                    f"histogram_quantile(0.99, sum by (instance, vm, le) "
                    f"({vm_rate('memtune_vm_touch_extra_latency_seconds_bucket')}))",
                    f"{WHO} p99",
                ),
                (
                    f"{vm_rate('memtune_vm_touch_extra_latency_seconds_sum')} / "
                    f"{vm_rate('memtune_vm_touch_extra_latency_seconds_count')}",
                    f"{WHO} mean",
                ),
            ],
            unit="s",
        ),
        vm_panel(
            "Faults per touch by kind",
            "Touches that faulted, by the state of the page touched.",
            (0, 32, 12, 8),
            [
                (
                    f"sum by (instance, vm, kind) ({vm_rate('memtune_vm_faults_total')}) / on (instance, vm) "
                    f"group_left "
                    f"sum by (instance, vm) ({vm_rate('memtune_vm_touches_total')})",
                    f"{WHO} {{{{kind}}}}",
                )
            ],
            unit="percentunit",
        ),
        vm_panel(
            "Touches per simulated second",
            "Guest memory touches (4 KiB) per simulated second.",
            (12, 32, 12, 8),
            [(per_sim_second("memtune_vm_touches_total", "instance, vm", VM), WHO)],
            unit="short",
        ),
    ]


def paging_panel() -> dict:
    """Bytes moved for the VM per simulated second, by direction and technique."""
    return vm_panel(
        "Paging traffic per simulated second",
        "Bytes per simulated second moved for this VM.",
        (0, 40, 24, 8),
        [
            (per_sim_second(f"memtune_vm_{m}_bytes_total", "instance, vm", VM), f"{WHO} {label}")
            for m, label in (
                ("swap_out", "swap-out"),
                ("swap_in", "swap-in"),
                ("compression", "compress"),
                ("decompression", "decompress"),
                ("guest_swap_in", "guest swap-in"),
            )
        ],
        unit="Bps",
    )


def configuration_panel() -> dict:
    """Configured memory (MEMSZ), reservation, limit and overhead (OVHD)."""
    return panel(
        "bargauge",
        "Configuration",
        "Configured memory, reservation, limit and overhead.",
        (0, 48, 24, 8),
        [
            target(e, lg, chr(ord("A") + i), instant=True)
            for i, (e, lg) in enumerate(
                [
                    vm_series("memtune_vm_configured_bytes", " configured (MEMSZ)"),
                    vm_series("memtune_vm_reservation_bytes", " reservation"),
                    vm_series("memtune_vm_limit_bytes", " limit"),
                    vm_series("memtune_vm_overhead_bytes", " overhead (OVHD)"),
                ]
            )
        ],
        unit="bytes",
        options={
            "orientation": "horizontal",
            "displayMode": "basic",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
    )


def vm_drilldown() -> dict:
    """The dashboard: memory, reclamation and sharing, waiting, paging traffic, configuration."""
    return dashboard(
        "memtune-vm",
        "memtune / VM drill-down",
        "Per-VM memory (esxtop columns), reclamation, sharing, stall and latency; starts on the 10 VMs "
        "that stall most. Each series is one VM on one host.",
        [HOSTS, TOP_VMS],
        [*memory_panels(), *reclamation_panels(), *waiting_panels(), paging_panel(), configuration_panel()],
    )
