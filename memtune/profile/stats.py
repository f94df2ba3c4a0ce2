"""Interval estimates for sampled shares and ratios.

A share estimated from ``k`` of ``n`` sampled pages gets a Wilson score interval (Wilson, JASA 1927;
recommended over the Wald interval for small ``n`` or shares near 0 or 1 by Brown, Cai & DasGupta,
Statistical Science 2001). When the sample is the whole population the estimate is exact and the
interval collapses to the point.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054   # two-sided 95 % normal quantile


def wilson(k: int, n: int, population: int | None = None, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson interval for k successes in n trials; exact if n == population."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    if population is not None and n >= population:
        return (p, p)
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def ratio_interval(sizes: np.ndarray, page: int, population: int | None = None,
                   z: float = Z95) -> tuple[float, float, float]:
    """Compression ratio (uncompressed / compressed bytes over the pages) and a normal-approximation
    interval from the mean compressed size (delta method: the bounds of the mean, inverted)."""
    n = int(sizes.size)
    if n == 0:
        return (float("nan"), float("nan"), float("nan"))
    mean = float(sizes.mean())
    ratio = page / mean
    if (population is not None and n >= population) or n < 2:
        return (ratio, ratio, ratio)
    half = z * float(sizes.std(ddof=1)) / math.sqrt(n)
    lo_mean, hi_mean = mean + half, max(1.0, mean - half)
    return (ratio, page / lo_mean, page / hi_mean)
