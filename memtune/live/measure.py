"""Reading the real host: per VM (cgroup usage, memory.stat, PSI) and per host (KSM, zram, swap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memtune.live import ksm, swap
from memtune.live.cgroup import Group


@dataclass
class Sample:
    t: float
    used: int                       # bytes the VMs' cgroups use (parent usage minus worker baselines)
    zram_used: int
    vm_usage: list[int]
    ksm: dict[str, int]
    zram: dict[str, int]
    swaps: dict[str, dict[str, int]]


def vm_counters(group: Group) -> dict[str, Any]:
    """Major faults, page faults, swap use and PSI totals of one VM's cgroup."""
    st = group.stat()
    out: dict[str, Any] = {k: st.get(k, 0) for k in ("pgmajfault", "pgfault", "swap", "rss", "cache")}
    out["pressure"] = group.pressure()
    return out


def host_sample(t: float, parent: Group, vms: list[Group], baseline: int, zram_dev: str | None) -> Sample:
    z = swap.zram_stats(zram_dev) if zram_dev else {}
    zram_used = z.get("mem_used_total", 0)
    return Sample(t=t, used=parent.usage() - baseline + zram_used, zram_used=zram_used,
                  vm_usage=[g.usage() for g in vms], ksm=ksm.counters(), zram=z, swaps=swap.swaps())
