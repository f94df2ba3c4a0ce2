"""The hypervisor's side of a live run: memory state from free memory, allocation targets and
balloon sizes, computed each tick from what the kernel reports, by the model's own rules.

Free memory is the parent cgroup's headroom (the scaled host memory minus what the VMs' cgroups
use and what zram holds); the state follows ``memtune.core.memstate`` (minFree, thresholds,
hysteresis); targets come from ``memtune.core.allocation`` (shares, idle tax, the active share
each worker samples); balloons follow the ``balloon`` plugin's rules: inflate toward the target in
the soft state within the inflate rate (the free-page rate while the guest has free pages), hold in
hard/low, deflate in the high state (or below target in clear) at the deflate rate, never below
what a VM's limit calls for, at most ``maxmemctl`` / ``Mem.CtlMaxPercent``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from memtune.core.allocation import allocation_targets
from memtune.core.memstate import MemState, min_free, next_state
from memtune.core.scenario import Scenario

PAGE = 4096


@dataclass
class Controller:
    scenario: Scenario
    balloon_on: bool
    state: MemState = MemState.HIGH
    time_in_state: np.ndarray = field(default_factory=lambda: np.zeros(len(MemState)))

    def __post_init__(self) -> None:
        sc, s = self.scenario, self.scenario.settings
        self.n = np.array([v.memory // PAGE for v in sc.vms], dtype=np.float64)
        self.limit = np.array([v.effective_limit // PAGE for v in sc.vms], dtype=np.float64)
        self.reservation = np.array([v.reservation // PAGE for v in sc.vms], dtype=np.float64)
        self.shares = np.array([v.shares_number for v in sc.vms], dtype=np.float64)
        pct = s["Mem.CtlMaxPercent"] / 100.0
        cap = [v.memory * pct if v.maxmemctl is None else min(v.maxmemctl, v.memory) for v in sc.vms]
        drivers = np.array([v.balloon_driver for v in sc.vms]) & self.balloon_on
        self.cap = np.where(drivers, np.floor(np.array(cap) / PAGE), 0.0)
        self.min_free = min_free(sc.host.memory, s["Mem.MemMinFreePct"])
        self.capacity = sc.host.memory - sum(v.overhead for v in sc.vms)   # what the VMs may use
        self.balloon = np.zeros(len(sc.vms))
        self.target = np.zeros(len(sc.vms))

    def step(self, dt: float, used: float, held: np.ndarray, active: np.ndarray,
             allocated: np.ndarray) -> np.ndarray:
        """One tick: new state and balloon sizes (pages) from bytes used and pages held per VM."""
        s = self.scenario.settings
        free = self.capacity - used
        self.state = next_state(self.state, free / self.min_free, s["memtune.state_hysteresis"])
        self.time_in_state[self.state] += dt
        cap = np.minimum(self.limit, np.maximum(allocated, self.reservation))
        target = allocation_targets(max((self.capacity - self.min_free) / PAGE, 0.0), self.shares,
                                    np.clip(active, 0.0, 1.0), s["Mem.IdleTax"] / 100.0,
                                    np.minimum(self.reservation, cap), cap)
        self.target = target                       # pages, for the metrics exporter
        floor = np.minimum(self.cap, np.maximum(allocated - self.limit, 0))
        need = held - target
        rate_free = s["memtune.balloon_inflate_rate_free"] * dt / PAGE
        rate_cold = s["memtune.balloon_inflate_rate"] * dt / PAGE
        rate_out = s["memtune.balloon_deflate_rate"] * dt / PAGE
        b = np.maximum(self.balloon, floor)
        if self.state == MemState.SOFT:
            free_left = np.maximum(self.n - allocated - b, 0)
            step = np.where(free_left > 0, np.minimum(rate_free, free_left), rate_cold)
            b = np.where(need > 0, b + np.minimum(step, need), b)
        elif self.state == MemState.HIGH:
            b = b - rate_out
        elif self.state == MemState.CLEAR:
            b = np.where(need < 0, b - np.minimum(rate_out, -need), b)
        self.balloon = np.floor(np.clip(b, floor, self.cap))
        return self.balloon
