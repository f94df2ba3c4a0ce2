"""The few numbers a driver and its worker exchange while a run goes: a file of int64 slots.

The driver writes ``go``, ``t0_ns``, ``balloon`` and ``reclaim``/``reclaim_seq``; the worker writes
the rest. One slot is one
aligned 8-byte store, so neither side ever reads a torn value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SLOTS = (
    "go",
    "t0_ns",
    "balloon",
    "phase",
    "ballooned",
    "touches",
    "active_ppm",
    "allocated",
    "guest_swap_ins",
    "guest_swap_outs",
    "first_touches",
    "wss",
    "backed",
    "heartbeat_ns",
    "region",
    "free_taken",
    "resident",
    "reclaim",          # driver: pages the host wants paged out of this VM (hard and low states)
    "reclaim_seq",      # driver: one more per request
    "host_paged",       # worker: pages it has paged out for the host (MADV_PAGEOUT), in all
)
# phase, written by the worker: 1 joined its cgroups, 2 filled its memory, 3 running, 4 done
GO_FILL, GO_RUN, GO_STOP = 1, 2, 3


class ControlBlock:
    """Named int64 slots in a small shared file (``np.memmap``)."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        mode = "w+" if create else "r+"
        self._m = np.memmap(path, dtype=np.int64, mode=mode, shape=(len(SLOTS),))
        self._i = {name: i for i, name in enumerate(SLOTS)}

    def __getitem__(self, name: str) -> int:
        return int(self._m[self._i[name]])

    def __setitem__(self, name: str, value: int) -> None:
        self._m[self._i[name]] = int(value)

    def snapshot(self) -> dict[str, int]:
        values = np.array(self._m)
        return {name: int(values[i]) for name, i in self._i.items()}


class LatencyBlock:
    """A worker's touch-latency book while it runs, as float64 slots in a small shared file:
    touches, extra seconds, running seconds, then the touches per latency bucket
    (:data:`memtune.core.latency.NB`), all counted from the end of the warm-up as the model's report.
    The worker writes it every quantum; the driver's metrics exporter reads it (a torn read mixes two
    quanta of one worker, which a scrape tolerates)."""

    HEAD = ("touches", "extra", "running")

    def __init__(self, path: str | Path, create: bool = False) -> None:
        from memtune.core.latency import NB

        mode = "w+" if create else "r+"
        self._m = np.memmap(path, dtype=np.float64, mode=mode, shape=(len(self.HEAD) + NB,))

    def write(self, touches: float, extra: float, running: float, hist: np.ndarray) -> None:
        self._m[3:] = hist
        self._m[:3] = (touches, extra, running)

    def read(self) -> np.ndarray:
        return np.array(self._m)
