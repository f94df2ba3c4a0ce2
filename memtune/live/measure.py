"""Reading the real host: per VM (cgroup usage, memory.stat, PSI) and per host (KSM, zram, swap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def region_memory(pid: int, address: int) -> dict[str, int]:
    """Rss, KSM and Swap (bytes) of the mapping at ``address`` in /proc/PID/smaps: the VM's own
    memory, apart from whatever else the worker process holds."""
    head = f"{address:x}-"
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps") as f:
            found = False
            for line in f:
                if not found:
                    found = line.startswith(head)
                    continue
                key, _, rest = line.partition(":")
                if key in ("Rss", "KSM", "Swap", "Anonymous"):
                    out[key] = int(rest.split()[0]) * 1024
                elif key == "VmFlags":
                    break
    except OSError:
        pass
    return out


def host_sample(t: float, parent: Group, regions: list[tuple[int, int]], zram_dev: str | None) -> Sample:
    """The host now; ``regions``: (pid, address) of each VM's memory (pid 0: VM gone)."""
    z = swap.zram_stats(zram_dev) if zram_dev else {}
    zram_used = z.get("mem_used_total", 0)
    k = ksm.counters()
    mem = [region_memory(pid, addr) if pid else {} for pid, addr in regions]
    held = [m.get("Rss", 0) - m.get("KSM", 0) for m in mem]
    shared = k.get("pages_shared", 0) * 4096
    vm_bytes = sum(held) + shared
    return Sample(t=t, used=vm_bytes + zram_used, other=max(parent.usage() - vm_bytes, 0), zram_used=zram_used,
                  held=held, ksm=k, zram=z, swaps=swap.swaps())
