"""Checks before a live run: root, the kernel features, and nobody else using KSM, zram or swap."""

from __future__ import annotations

import os

from memtune.live import cgroup, ksm, swap
from memtune.live.state import HostError


def unavailable() -> str | None:
    """Why a live run cannot happen on this machine at all (None if it can)."""
    if os.name != "posix" or not os.path.exists("/proc/self/stat"):
        return "not a Linux host"
    if os.geteuid() != 0:
        return "needs root (cgroups, KSM and swap are host-wide)"
    for reason in (cgroup.available(), ksm.available()):
        if reason:
            return reason
    return None


def preflight(force: bool = False) -> None:
    """Refuse (HostError, one line) unless this host may be used; ``force`` skips the in-use checks."""
    reason = unavailable()
    if reason:
        raise HostError(reason)
    if force:
        return
    for reason in (ksm.in_use(), swap.in_use()):
        if reason:
            raise HostError(f"{reason}: something else uses it (--force to go ahead anyway)")


def host_snapshot() -> dict[str, object]:
    """Everything a live run may change, to compare before and after (tests, ``live status``)."""
    from pathlib import Path

    def read(p: Path) -> str:
        try:
            return p.read_text().strip()
        except OSError as exc:            # write-only or vanished
            return f"<{exc.errno}>"

    snap: dict[str, object] = {}
    for p in sorted(ksm.KSM.iterdir()):
        if p.name in ksm.KNOBS:
            snap[f"ksm/{p.name}"] = read(p)
    for dev in swap.zram_devices():
        for name in ("disksize", "comp_algorithm", "mem_limit"):
            snap[f"{dev}/{name}"] = read(Path(f"/sys/block/{dev}/{name}"))
    for p in sorted(Path("/sys/module/zswap/parameters").glob("*")):
        snap[f"zswap/{p.name}"] = read(p)
    snap["swaps"] = sorted(swap.swaps())
    for root in (cgroup.V1_ROOT, cgroup.V2_ROOT):
        if root.exists():
            snap[f"cgroups {root}"] = sorted(p.name for p in root.iterdir() if p.is_dir())
    return snap
