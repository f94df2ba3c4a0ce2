"""Working-set estimation by sampling, as ESX does it (Waldspurger, OSDI 2002, section 5.3).

Every ``Mem.SamplePeriod`` seconds each VM has ``n`` (100) random pages watched; the share that was
touched during the period is the sample ``f``. ESX keeps a slow and a fast moving average and uses
the larger, so the estimate rises fast when a VM becomes active and falls slowly when it idles.

The engine draws a bounded number of touches per tick, so a watched page may be touched by the real
workload without one of our draws landing on it. We therefore decide "touched during the period"
with the probability the real touch process gives: ``1 - exp(-touches * p_page)``.
"""

from __future__ import annotations

import numpy as np


class WorkingSetSampler:
    """Per-VM active-fraction estimate: max of a fast and a slow exponential moving average."""

    def __init__(self, nvm: int, *, pages_per_sample: int = 100, alpha_fast: float = 0.5,
                 alpha_slow: float = 0.1, initial: float = 1.0) -> None:
        self.n = pages_per_sample
        self.alpha_fast = alpha_fast
        self.alpha_slow = alpha_slow
        self.fast = np.full(nvm, initial)
        self.slow = np.full(nvm, initial)
        self.last = np.full(nvm, initial)
        self.touch_sum = np.zeros(nvm)

    @property
    def estimate(self) -> np.ndarray:
        return np.maximum(self.fast, self.slow)

    def observe_touches(self, touches: np.ndarray) -> None:
        """Real touches per VM since the period began."""
        self.touch_sum += touches

    def close_period(self, rng: np.random.Generator, probability_of, npages: np.ndarray,
                     running: np.ndarray, scale: int = 1) -> np.ndarray:
        """End a sampling period: draw ``n`` random pages per VM and update the averages.

        ``probability_of(vm, rank)`` is the per-touch probability of a simulated page, which stands
        for ``scale`` 4 KiB pages; ESX watches 4 KiB pages, so each is touched with ``p / scale``.
        Returns the samples.
        """
        nvm = npages.size
        vm = np.repeat(np.arange(nvm), self.n)
        rank = np.floor(rng.random(vm.size) * npages[vm]).astype(np.int64)
        p = probability_of(vm, rank)
        touched = rng.random(vm.size) < -np.expm1(-self.touch_sum[vm] * p / scale)
        f = np.bincount(vm, weights=touched, minlength=nvm) / self.n
        f = np.where(running, f, 0.0)
        self.fast += self.alpha_fast * (f - self.fast)
        self.slow += self.alpha_slow * (f - self.slow)
        self.last = f
        self.touch_sum[:] = 0
        return f
