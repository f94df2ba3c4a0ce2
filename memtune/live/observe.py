"""What a live run hands its observer (the metrics exporter) each control tick: read-only data.

The Linux driver calls ``observer.start(RunInfo)`` once the workers hold their memory and
``observer.tick(TickView)`` after each control step; an observer must not change the host.
Anything with the same fields (a test's fake run) drives an observer the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from memtune.core.host import Host
    from memtune.live.control import Controller
    from memtune.live.measure import Sample


@dataclass
class RunInfo:
    """The run as configured: the model host (names, settings, plugins), the hypervisor's controller."""

    model: Host
    controller: Controller
    baseline: list[int]                 # bytes each worker holds beyond its VM's pages
    sharing: str | None                 # "tps" / "ksm" when KSM merges the VMs' pages, else None
    zram: str | None = None             # the zram swap device (/dev/zramN), if the run uses one
    swap_file: str | None = None        # the hypervisor swap file, if any


@dataclass
class TickView:
    """One control tick of a live run (bytes unless named otherwise)."""

    now: float                          # seconds since the workers started running
    sample: Sample                      # memtune.live.measure.host_sample()
    ctl: list[dict[str, int]]           # each worker's control block (ControlBlock.snapshot())
    cgroups: list[dict[str, Any]]       # each VM cgroup's counters (measure.vm_counters)
    latency: list[np.ndarray]           # each worker's LatencyBlock (touches, extra, running, hist...)
    killed: set[int] = field(default_factory=set)   # VMs whose worker the OOM killer took


class RunObserver(Protocol):
    def start(self, info: RunInfo) -> None: ...

    def tick(self, view: TickView) -> None: ...
