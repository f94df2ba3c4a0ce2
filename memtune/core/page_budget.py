"""Whether a run's per-page state fits this machine: refuse it before it allocates, not by the OOM killer.

The page table, workloads and plugins keep numpy arrays per simulated page; at ``page_scale = 1`` a
64 GiB host (16.8 M pages) peaks at about 800 MB of RSS, i.e. ~45 bytes a page over the interpreter
(``/usr/bin/time -f %M memtune simulate`` on such a scenario). Linux overcommits, so an allocation too
large for the machine succeeds and the process is killed later; hence the check against
``MemAvailable`` (``/proc/meminfo``, see Documentation/filesystems/proc.rst) up front.
"""

from __future__ import annotations

import os

from memtune.errors import ConfigError
from memtune.units import format_size

BYTES_PER_PAGE = 64  # per simulated page, all arrays, with margin over the ~45 B measured


def available_bytes() -> int:
    """Memory the kernel says a new process can use without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(pages: int, page_scale: int, source: str, available: int | None = None) -> None:
    """Raise a one-line error naming ``host.page_scale`` when ``pages`` simulated pages would need
    more than the memory available; it names the smallest power-of-two scale that fits in half."""
    available = available_bytes() if available is None else available
    need = pages * BYTES_PER_PAGE
    if need <= available:
        return
    fits = page_scale
    while pages * page_scale // fits * BYTES_PER_PAGE > available // 2:
        fits *= 2
    raise ConfigError(
        f"{pages:,} simulated pages need about {format_size(need)}, more than the "
        f"{format_size(available)} this machine has available; set page_scale = {fits} or more "
        '(or "auto")',
        source=source,
        field="host.page_scale",
    )
