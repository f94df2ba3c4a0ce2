"""Reading the real host: per VM (cgroup usage, memory.stat, PSI) and per host (KSM, zram, swap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.live import ksm, swap
from memtune.live.cgroup import Group


@dataclass
class Sample:
    t: float
    used: int                       # bytes the VMs use: private pages, KSM's shared pages, zram
    other: int                      # bytes the parent cgroup holds beyond the VMs' pages (the workers)
    zram_used: int
    held: list[int]                 # bytes of private (not KSM-merged) memory per VM
    ksm: dict[str, int]
    zram: dict[str, int]
    swaps: dict[str, dict[str, int]]


def vm_counters(group: Group) -> dict[str, Any]:
    """Major faults, page faults, swap use and PSI totals of one VM's cgroup."""
    st = group.stat()
    out: dict[str, Any] = {k: st.get(k, 0) for k in ("pgmajfault", "pgfault", "swap", "rss", "cache")}
    out["pressure"] = group.pressure()
    return out


def ksm_merging(pid: int) -> int:
    """Pages of process ``pid`` that KSM has merged (``/proc/PID/ksm_stat``; 0 if unavailable)."""
    try:
        with open(f"/proc/{pid}/ksm_stat") as f:
            for line in f:
                if line.startswith("ksm_merging_pages"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def host_sample(t: float, parent: Group, resident: list[tuple[int, int]], zram_dev: str | None) -> Sample:
    """The host now; ``resident``: (pid, pages in RAM) of each VM's memory (pid 0: VM gone).

    A VM holds its resident pages that KSM has not merged (those are the host's shared frames)."""
    z = swap.zram_stats(zram_dev) if zram_dev else {}
    zram_used = z.get("mem_used_total", 0)
    k = ksm.counters()
    held = [max(pages - ksm_merging(pid), 0) * 4096 if pid else 0 for pid, pages in resident]
    shared = k.get("pages_shared", 0) * 4096
    vm_bytes = sum(held) + shared
    return Sample(
        t=t,
        used=vm_bytes + zram_used,
        other=max(parent.usage() - vm_bytes, 0),
        zram_used=zram_used,
        held=held,
        ksm=k,
        zram=z,
        swaps=swap.swaps(),
    )


def zram_share(groups: list[Group], s: Sample, host_swap: str) -> np.ndarray:
    """zram's memory per VM (bytes): in proportion to the swap its cgroup uses (v1 ``swap`` counts
    zram and the swap file alike; both devices' contents taken in the ratio of their use)."""
    if not s.zram_used:
        return np.zeros(len(groups))
    vm_swap = np.array([g.stat().get("swap", 0) for g in groups], dtype=np.float64)
    file_used = s.swaps.get(host_swap, {}).get("used", 0)
    return vm_swap * s.zram_used / max(s.zram.get("orig_data_size", 0) + file_used, 1)
