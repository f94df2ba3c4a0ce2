"""Hypervisor swap (a swap file) and compression (a zram swap device) for a live run.

The model's compression cache maps to zram used as the first swap device (higher priority), its
swap to a swap file behind it; the kernel fills zram first and spills to the file when zram's
``mem_limit`` is reached (Documentation/admin-guide/blockdev/zram.rst). Only devices this run
switched on are switched off again.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from memtune.live.state import HostError, HostState, sysfs_read

ZRAM_PRIORITY = 100
FILE_PRIORITY = 10
MM_STAT = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max",
           "same_pages", "pages_compacted", "huge_pages")


def swaps() -> dict[str, dict[str, int]]:
    """Active swap areas from /proc/swaps: path -> size, used (bytes), priority."""
    out = {}
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        f = line.split()
        out[f[0]] = {"size": int(f[2]) * 1024, "used": int(f[3]) * 1024, "priority": int(f[4])}
    return out


def zram_devices() -> list[str]:
    return sorted(p.name for p in Path("/sys/block").glob("zram*"))


def in_use() -> str | None:
    """Why swap or zram looks in use by someone else, or None."""
    active = swaps()
    if active:
        return f"swap is in use ({', '.join(active)})"
    for dev in zram_devices():
        if int(Path(f"/sys/block/{dev}/disksize").read_text()) != 0:
            return f"/dev/{dev} is configured (disksize != 0)"
    return None


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise HostError(f"{cmd[0]} not found (Debian package util-linux)") from None
    except subprocess.CalledProcessError as exc:
        raise HostError(f"{' '.join(cmd)} failed: {exc.stderr.strip()}") from None


def _swapon(st: HostState, path: str, priority: int) -> None:
    _run(["mkswap", path])
    st.record("swapon", path=path)
    _run(["swapon", "-p", str(priority), path])


def add_swap_file(st: HostState, path: Path, size: int) -> str:
    """Create, format and switch on a swap file of ``size`` bytes (removed again on restore)."""
    if path.exists():
        raise HostError(f"{path} exists; refusing to overwrite it", source=str(path))
    st.record("file", path=str(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    _swapon(st, str(path), FILE_PRIORITY)
    return str(path)


def add_zram(st: HostState, disksize: int, mem_limit: int, algorithm: str) -> str:
    """Configure the first unused zram device as a swap device; returns its /dev path."""
    free = [d for d in zram_devices() if int(Path(f"/sys/block/{d}/disksize").read_text()) == 0]
    if not free:
        raise HostError("no unused zram device (modprobe zram, or free one)")
    dev = free[0]
    sys = f"/sys/block/{dev}"
    choices = Path(f"{sys}/comp_algorithm").read_text().replace("[", "").replace("]", "").split()
    if algorithm not in choices:
        raise HostError(f"zram compressor {algorithm!r} not offered here ({', '.join(choices)})")
    if sysfs_read(f"{sys}/comp_algorithm") != algorithm:
        st.write_sysfs(f"{sys}/comp_algorithm", algorithm)
    st.record("zram", device=dev)              # undone by writing 1 to reset (after swapoff)
    Path(f"{sys}/disksize").write_text(f"{disksize}\n")
    Path(f"{sys}/mem_limit").write_text(f"{mem_limit}\n")
    _swapon(st, f"/dev/{dev}", ZRAM_PRIORITY)
    return f"/dev/{dev}"


def zram_stats(dev: str) -> dict[str, int]:
    """``mm_stat`` of a zram device (bytes; ``same_pages``/``huge_pages`` in pages)."""
    fields = Path(f"/sys/block/{Path(dev).name}/mm_stat").read_text().split()
    return {k: int(v) for k, v in zip(MM_STAT, fields, strict=False)}
