"""Share-based allocation with the idle memory tax (Waldspurger, OSDI 2002, sections 5-6).

Each VM's shares-per-page ratio is ``rho = S / (P * (f + k * (1 - f)))`` with ``k = 1 / (1 - tau)``.
Min-funding revocation takes memory from the VM with the lowest ``rho`` first; its fixed point is
the allocation where every VM not held at a bound has the same ``rho``, i.e. ``P_v`` proportional
to ``S_v / (f_v + k (1 - f_v))``. We solve that fixed point directly by water-filling, with each
VM held within ``[reservation, cap]`` where ``cap = min(limit, configured, what it can use)``.
"""

from __future__ import annotations

import numpy as np


def idle_cost(tau: float) -> float:
    """``k = 1 / (1 - tau)``: the cost of an idle page relative to an active one."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"idle tax rate must be in [0, 1), got {tau}")
    return 1.0 / (1.0 - tau)


def shares_per_page(shares: np.ndarray, pages: np.ndarray, active: np.ndarray, tau: float) -> np.ndarray:
    """rho for each VM holding ``pages`` with active fraction ``active``."""
    k = idle_cost(tau)
    with np.errstate(divide="ignore"):
        return shares / (np.maximum(pages, 1e-9) * (active + k * (1.0 - active)))


def allocation_targets(available: float, shares: np.ndarray, active: np.ndarray, tau: float,
                       floor: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Targets (pages) summing to ``available`` where possible, at equal rho between the bounds.

    ``floor`` (reservations) is always granted; if even the floors do not fit, the floors are
    returned (admission control should have refused such a host). No VM gets more than ``cap``.
    """
    floor = np.asarray(floor, dtype=np.float64)
    cap = np.maximum(np.asarray(cap, dtype=np.float64), floor)
    if cap.sum() <= available:
        return cap
    if floor.sum() >= available:
        return floor
    k = idle_cost(tau)
    weight = np.asarray(shares, dtype=np.float64) / (active + k * (1.0 - active))
    weight = np.maximum(weight, 1e-12)
    # target(L) = clip(weight * L, floor, cap) is monotone in L; find L with sum == available.
    bps = np.unique(np.concatenate([floor / weight, cap / weight]))
    sums = _sums(bps, weight, floor, cap)
    j = int(np.searchsorted(sums, available))
    if j == 0:
        level = bps[0] * available / max(sums[0], 1e-12)
    elif j >= len(bps):
        level = bps[-1]
    else:
        lo_l, hi_l, lo_s, hi_s = bps[j - 1], bps[j], sums[j - 1], sums[j]
        level = lo_l + (hi_l - lo_l) * (available - lo_s) / max(hi_s - lo_s, 1e-12)
    return np.minimum(np.maximum(weight * level, floor), cap)


def _sums(levels: np.ndarray, weight: np.ndarray, floor: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Total of ``clip(weight * L, floor, cap)`` for each level ``L``, a block of levels at a time."""
    out = np.empty(levels.size)
    for s in range(0, levels.size, 256):
        lv = levels[s:s + 256, None]
        out[s:s + 256] = np.minimum(np.maximum(weight * lv, floor), cap).sum(axis=1)
    return out
