"""Latency accounting per VM: extra latency per touch (mean, p99) and stall fraction.

Extra latency is what a touch costs beyond a DRAM access. Each VM keeps a histogram of extra
latency per touch over fixed log-spaced buckets (10 ns .. 100 ms, plus a zero bucket), from which
p99 is read, and totals from which the mean and the stall fraction (time waiting / time running,
like Linux PSI "some" and vSphere mem.latency) follow.
"""

from __future__ import annotations

import numpy as np

# Bucket upper bounds in seconds: 0 (no extra latency), then 8 per decade from 10 ns to 100 ms.
BUCKET_BOUNDS = np.concatenate([[0.0], np.logspace(-8, -1, 7 * 8 + 1)])
NB = BUCKET_BOUNDS.size + 1   # last bucket: above 100 ms


def bucket_of(latency: np.ndarray) -> np.ndarray:
    """Index of the histogram bucket holding each latency (upper bound inclusive)."""
    return np.searchsorted(BUCKET_BOUNDS, latency, side="left")


class LatencyBook:
    """Running totals for every VM; updated with one bincount per tick."""

    def __init__(self, nvm: int) -> None:
        self.nvm = nvm
        self.touches = np.zeros(nvm)          # real (4 KiB) touches
        self.extra = np.zeros(nvm)            # seconds of extra latency, summed over touches
        self.stall = np.zeros(nvm)            # seconds stalled
        self.running = np.zeros(nvm)          # seconds powered on
        self.hist = np.zeros((nvm, NB))       # touches per bucket
        self.faults: dict[str, np.ndarray] = {}

    def add(self, vm: np.ndarray, latency: np.ndarray, weight: np.ndarray) -> None:
        """``weight[i]`` touches of VM ``vm[i]`` each waited ``latency[i]`` seconds extra."""
        if vm.size == 0:
            return
        self.extra += np.bincount(vm, weights=latency * weight, minlength=self.nvm)
        flat = vm.astype(np.int64) * NB + bucket_of(latency)
        self.hist += np.bincount(flat, weights=weight, minlength=self.nvm * NB).reshape(self.nvm, NB)

    def add_plain(self, touches: np.ndarray) -> None:
        """Touches with no extra latency (counted in the zero bucket)."""
        self.touches += touches
        self.hist[:, 0] += touches

    def count_faults(self, kind: str, vm: np.ndarray, weight: np.ndarray) -> None:
        arr = self.faults.setdefault(kind, np.zeros(self.nvm))
        arr += np.bincount(vm, weights=weight, minlength=self.nvm)

    def mean_extra(self) -> np.ndarray:
        return np.divide(self.extra, self.touches, out=np.zeros(self.nvm), where=self.touches > 0)

    def quantile(self, q: float, hist: np.ndarray | None = None) -> np.ndarray:
        """Per-VM extra-latency quantile, interpolated log-linearly inside the bucket."""
        h = self.hist if hist is None else hist
        if h.ndim == 1:
            h = h[None, :]
        total = h.sum(axis=1)
        cum = np.cumsum(h, axis=1)
        out = np.zeros(h.shape[0])
        for v in np.flatnonzero(total > 0):
            target = q * total[v]
            b = int(np.searchsorted(cum[v], target, side="left"))
            if b == 0:
                continue
            upper = BUCKET_BOUNDS[min(b, BUCKET_BOUNDS.size - 1)]
            lower = BUCKET_BOUNDS[b - 1] if b >= 2 else upper / 10 ** (1 / 8)
            below = cum[v, b - 1]
            frac = (target - below) / max(h[v, b], 1e-300)
            out[v] = lower * (upper / max(lower, 1e-300)) ** frac if lower > 0 else upper
        return out

    def stall_fraction(self) -> np.ndarray:
        return np.divide(np.minimum(self.stall, self.running), self.running, out=np.zeros(self.nvm),
                         where=self.running > 0)
