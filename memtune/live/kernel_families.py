"""Families only a real host has: the kernel's own view beside the model's families.

PSI of each VM's cgroup (the model's ``memtune_vm_stall_seconds_total`` is its counterpart: stall
from touch latency), and the compressed tiers' statistics (zswap: ``/proc/meminfo``,
``/proc/vmstat``, debugfs; zram: ``mm_stat``), named after node_exporter's ``node_pressure_*`` and
the sysfs/debugfs files they come from. docs/metrics.md lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import CounterMetricFamily

from memtune.live import zswap
from memtune.live.cgroup import PARENT, V2_ROOT, read_pressure
from memtune.plugin import host_counter, host_gauge, vm_family

if TYPE_CHECKING:
    from memtune.live.observe import RunInfo, TickView

OWNER = "live"
KERNEL_FAMILIES = ("memtune_vm_memory_pressure_seconds", "memtune_host_memory_pressure_seconds",
                   "memtune_zswap_", "memtune_zram_")   # name prefixes
# zswap statistics that only grow (pages or events); the rest are gauges
ZSWAP_COUNTERS = ("zswpin", "zswpout", "zswpwb", "pool_limit_hit", "written_back_pages", "decompress_fail",
                  "reject_reclaim_fail", "reject_alloc_fail", "reject_kmemcache_fail", "reject_compress_fail",
                  "reject_compress_poor")
ZSWAP_GAUGES = {"pool_bytes": "RAM the zswap pool takes (meminfo Zswap).",
                "stored_bytes": "Data zswap holds, uncompressed (meminfo Zswapped).",
                "stored_pages": "Pages zswap holds (debugfs stored_pages).",
                "stored_incompressible_pages": "Pages zswap holds uncompressed (debugfs)."}
ZRAM_BYTES = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max")
ZRAM_PAGES = ("same_pages", "huge_pages")          # gauges, 4 KiB pages
ZRAM_COUNTERS = ("pages_compacted",)


def psi_family(info: RunInfo, view: TickView) -> Any:
    """``memtune_vm_memory_pressure_seconds_total{vm,kind}``: PSI ``some``/``full`` totals of each
    VM's cgroup2 group (seconds since the group was made; NaN where PSI is unavailable)."""
    fam = vm_family("memtune_vm_memory_pressure_seconds_total",
                    "Linux PSI of the VM's cgroup: time some / all of its tasks waited on memory "
                    "(memory.pressure total; node_exporter node_pressure_memory_*_seconds_total).",
                    "counter", list(info.model.vm_names))
    for kind in ("some", "full"):
        fam.add_column(np.array([g.get("pressure", {}).get(kind, np.nan) for g in view.cgroups]),
                       {"kind": kind})
    return fam


def host_psi_family(path: Path = V2_ROOT / PARENT / "memory.pressure") -> Any | None:
    """``memtune_host_memory_pressure_seconds_total{kind}``: PSI of the host's cgroup (all VMs)."""
    psi = read_pressure(path)
    if not psi:
        return None
    fam = CounterMetricFamily("memtune_host_memory_pressure_seconds",
                              "Linux PSI of the host's cgroup (all VMs): time some / all tasks waited "
                              "on memory.",
                              labels=["kind"])
    for kind in ("some", "full"):
        fam.add_metric([kind], psi.get(kind, float("nan")))
    return fam


def zswap_families(stats: dict[str, int]) -> list[Any]:
    out = []
    for key, value in sorted(stats.items()):
        name = f"memtune_zswap_{key}"
        if key in ZSWAP_COUNTERS:
            out.append(host_counter(name, f"zswap {key} (/proc/vmstat or debugfs zswap/{key}).", value))
        elif key in ZSWAP_GAUGES:
            out.append(host_gauge(name, ZSWAP_GAUGES[key], value))
        elif key == "pool_total_size":
            out.append(host_gauge("memtune_zswap_pool_total_size_bytes", "zswap pool size (debugfs).", value))
    return out


def zram_families(mm_stat: dict[str, int]) -> list[Any]:
    out: list[Any] = []
    for key in (k for k in ZRAM_BYTES + ZRAM_PAGES + ZRAM_COUNTERS if k in mm_stat):
        doc = f"zram mm_stat {key}" + (" (4 KiB pages)." if key not in ZRAM_BYTES else ".")
        if key in ZRAM_COUNTERS:
            out.append(host_counter(f"memtune_zram_{key}", doc, mm_stat[key]))
        else:
            name = f"memtune_zram_{key}" + ("_bytes" if key in ZRAM_BYTES else "")
            out.append(host_gauge(name, doc, mm_stat[key]))
    return out


def kernel_families(info: RunInfo, view: TickView) -> list[tuple[str, Any]]:
    """The real host's own families for one tick (PSI per VM; zswap, zram where the run uses them)."""
    fams = [psi_family(info, view)]
    host = host_psi_family()
    if host is not None:
        fams.append(host)
    if zswap.enabled():
        fams += zswap_families(zswap.stats())
    if view.sample.zram:
        fams += zram_families(view.sample.zram)
    return [(OWNER, f) for f in fams]
