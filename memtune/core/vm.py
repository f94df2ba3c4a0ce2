"""Virtual machine configuration: size, reservation, limit, shares, overhead.

Names follow the vSphere options they mirror: ``sched.mem.min`` (reservation), ``sched.mem.max``
(limit), ``sched.mem.shares``, ``sched.mem.maxmemctl``, ``sched.mem.pshare.salt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from memtune.core.workload import WorkloadSpec
from memtune.units import MiB

# sched.mem.shares presets: shares per MB of configured memory (vSphere Resource Management guide).
SHARES_PER_MB = {"low": 5, "normal": 10, "high": 20}

# Overhead memory for a 1-vCPU VM, vSphere 6.7 "Overhead Memory on Virtual Machines" table:
# configured MB -> overhead MB. Linear interpolation between points, linear extrapolation beyond.
_OVERHEAD_MB = np.array([[256, 20.29], [1024, 25.90], [4096, 48.64], [16384, 139.62]])


def overhead_bytes(configured: int) -> int:
    """Hypervisor overhead memory of a VM of ``configured`` bytes (vSphere 6.7, 1 vCPU)."""
    mb = configured / MiB
    xs, ys = _OVERHEAD_MB[:, 0], _OVERHEAD_MB[:, 1]
    if mb > xs[-1]:
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        over = ys[-1] + slope * (mb - xs[-1])
    elif mb < xs[0]:
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        over = max(ys[0] - slope * (xs[0] - mb), 10.0)
    else:
        over = float(np.interp(mb, xs, ys))
    return int(round(over * MiB))


def shares_value(shares: str | int, configured: int) -> int:
    """Numeric shares from ``low``/``normal``/``high`` (5/10/20 per MB) or a number."""
    if isinstance(shares, str):
        return SHARES_PER_MB[shares] * max(1, configured // MiB)
    return int(shares)


@dataclass(frozen=True)
class VMSpec:
    """One VM as configured: what a .vmx and its resource settings say."""

    name: str
    memory: int                      # configured size (MEMSZ), bytes
    workload: WorkloadSpec
    reservation: int = 0             # sched.mem.min, bytes
    limit: int | None = None         # sched.mem.max, bytes; None = configured
    shares: str | int = "normal"     # sched.mem.shares
    balloon_driver: bool = True      # VMware Tools / virtio-balloon present
    maxmemctl: int | None = None     # sched.mem.maxmemctl, bytes; None = Mem.CtlMaxPercent
    salt: str | None = None          # sched.mem.pshare.salt
    encrypted: bool = False
    large_pages: bool = True
    image: str = ""                  # guest image: VMs of one image share template pages
    start: float = 0.0               # power-on time, seconds into the run
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def effective_limit(self) -> int:
        return self.memory if self.limit is None else min(self.limit, self.memory)

    @property
    def shares_number(self) -> int:
        return shares_value(self.shares, self.memory)

    @property
    def overhead(self) -> int:
        return overhead_bytes(self.memory)
