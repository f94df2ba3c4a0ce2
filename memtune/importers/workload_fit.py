"""A workload shape fitted to a working-set series: constant, diurnal or phased.

Rules (per VM, from the working-set share ``x(t)``; model choices matching the model's workloads,
docs/profiles.md):
    constant        the series varies by less than 10 % of its mean (or 1 % of MEMSZ)
    diurnal         a sinusoid ``b + A sin(2 pi t / P + phi)`` (P from 1/8 of the capture to all of it)
                    explains >= 80 % of the variance and starts near its mean going up (|phi| <= pi/8),
                    as the model's diurnal workload does
    phased          otherwise, if steps found by binary segmentation (least squares, at most 8 phases,
                    each split must remove >= 10 % of the variance) explain >= 50 % of it
    constant        otherwise, at the mean, with the poor fit reported
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CONSTANT_CV = 0.10          # model choice: below 10 % relative variation a workload is constant
DIURNAL_R2 = 0.80
DIURNAL_PHASE = math.pi / 8
PHASED_R2 = 0.50
SPLIT_GAIN = 0.10
MAX_PHASES = 8


@dataclass
class Fit:
    """A workload shape fitted to a working-set series (shares of MEMSZ)."""

    kind: str
    wss: float
    r2: float | None = None
    period: float | None = None
    amplitude: float | None = None
    phases: list[tuple[float, float]] = field(default_factory=list)  # (at seconds, wss)
    note: str = ""

    def peak(self) -> float:
        if self.kind == "diurnal":
            return self.wss * (1 + (self.amplitude or 0.0))
        return max([self.wss] + [w for _, w in self.phases])


def _r2(x: np.ndarray, model: np.ndarray) -> float:
    sst = float(((x - x.mean()) ** 2).sum())
    return 1.0 - float(((x - model) ** 2).sum()) / sst if sst > 0 else 1.0


def fit_sinusoid(t: np.ndarray, x: np.ndarray) -> tuple[float, float, float, float, float]:
    """Best (period, base, amplitude, phase, R^2) of ``b + A sin(2 pi t / P + phi)`` over a grid of
    periods from 1/8 of the span to the span (one full cycle at least)."""
    span = float(t[-1] - t[0]) + (float(np.median(np.diff(t))) if t.size > 1 else 0.0)
    periods = np.geomspace(span / 8, span, 240)
    best = (span, float(x.mean()), 0.0, 0.0, -np.inf)
    for p in periods:
        w = 2 * np.pi * t / p
        a = np.column_stack([np.ones_like(t), np.sin(w), np.cos(w)])
        coef, *_ = np.linalg.lstsq(a, x, rcond=None)
        r2 = _r2(x, a @ coef)
        if r2 > best[4]:
            amp = float(math.hypot(coef[1], coef[2]))
            best = (float(p), float(coef[0]), amp, float(math.atan2(coef[2], coef[1])), r2)
    return best


def segment(x: np.ndarray, min_len: int) -> list[int]:
    """Start indices of the steps of ``x`` found by binary segmentation (least squares)."""
    total = float(((x - x.mean()) ** 2).sum())
    cuts = [0, x.size]
    if total <= 0:
        return [0]
    while len(cuts) - 1 < MAX_PHASES:
        best_gain, best_cut = 0.0, None
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            seg = x[lo:hi]
            n = seg.size
            if n < 2 * min_len:
                continue
            c1 = np.cumsum(seg)
            c2 = np.cumsum(seg * seg)
            k = np.arange(min_len, n - min_len + 1)
            left = c2[k - 1] - c1[k - 1] ** 2 / k
            right = (c2[-1] - c2[k - 1]) - (c1[-1] - c1[k - 1]) ** 2 / (n - k)
            sse_whole = c2[-1] - c1[-1] ** 2 / n
            gains = sse_whole - (left + right)
            j = int(np.argmax(gains))
            if gains[j] > best_gain:
                best_gain, best_cut = float(gains[j]), lo + int(k[j])
        if best_cut is None or best_gain < SPLIT_GAIN * total:
            break
        cuts = sorted(cuts + [best_cut])
    return cuts[:-1]


def fit_workload(t: np.ndarray, x: np.ndarray) -> Fit:
    """Constant, diurnal or phased, by the rules in the module docstring."""
    ok = np.isfinite(x)
    t, x = t[ok], x[ok]
    if x.size == 0:
        return Fit("constant", 0.0, note="no valid samples")
    mean = float(x.mean())
    spread = float(x.std())
    if x.size < 4 or spread <= max(CONSTANT_CV * mean, 0.01):
        return Fit("constant", mean, note=f"varies by {spread / mean:.1%} of its mean" if mean else "")
    period, base, amp, phase, r2s = fit_sinusoid(t, x)
    if r2s >= DIURNAL_R2 and abs(phase) <= DIURNAL_PHASE and base > 0:
        return Fit(
            "diurnal",
            base,
            r2=r2s,
            period=period,
            amplitude=min(1.0, amp / base),
            note=f"sinusoid R^2 {r2s:.2f}",
        )
    cuts = segment(x, max(2, x.size // 20))
    levels = [float(x[a:b].mean()) for a, b in zip(cuts, cuts[1:] + [x.size], strict=True)]
    model = np.concatenate(
        [np.full(b - a, lv) for a, b, lv in zip(cuts, cuts[1:] + [x.size], levels, strict=True)]
    )
    r2p = _r2(x, model)
    why = (
        f"; sinusoid R^2 {r2s:.2f} but phase {phase:+.2f} rad at the start of the capture"
        if r2s >= DIURNAL_R2
        else ""
    )
    if len(cuts) > 1 and r2p >= PHASED_R2:
        return Fit(
            "phased",
            levels[0],
            r2=r2p,
            phases=[(float(t[c]), lv) for c, lv in zip(cuts[1:], levels[1:], strict=True)],
            note=f"{len(cuts)} steps R^2 {r2p:.2f}{why}",
        )
    return Fit(
        "constant",
        mean,
        r2=max(r2p, r2s),
        note=f"no shape explains the series (steps R^2 {r2p:.2f}, sinusoid R^2 {r2s:.2f}); mean used",
    )
