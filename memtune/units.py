"""Explicit units for sizes, durations and latencies.

Sizes accept ``"4 GiB"``, ``"512MiB"``, ``"1.5 TB"`` or plain integers (bytes). Durations accept
``"30m"``, ``"1h"``, ``"250ms"`` or plain numbers (seconds). Binary prefixes (KiB, MiB, GiB, TiB)
are powers of 1024; decimal ones (kB, MB, GB, TB) powers of 1000, as in IEC 80000-13. ``"MB"`` in
vSphere means MiB; we keep the standard meaning and say so in the docs.
"""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1, "b": 1, "byte": 1, "bytes": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_TIME_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3,
    "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
}
_NUM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ]*)\s*$")
_NEGATIVE = re.compile(r"^\s*-\s*[0-9.]")

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4


def parse_size(value: object) -> int:
    """Bytes from ``"4 GiB"``-style text or a non-negative integer. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as '4 GiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if isinstance(value, float):
        if value < 0 or value != value:
            raise ValueError(f"size must not be negative, got {value}")
        if not math.isfinite(value):
            raise ValueError(f"size must be finite, got {value}")
        return int(round(value))
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as '4 GiB', got {value!r}")
    if _NEGATIVE.match(value):
        raise ValueError(f"size must not be negative, got {value!r}")
    m = _NUM.match(value)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as '4 GiB' or '512 MiB', got {value!r}")
    size = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if not math.isfinite(size):
        raise ValueError(f"size must be finite, got {value!r}")
    return int(round(size))


def parse_duration(value: object) -> float:
    """Seconds from ``"30m"``, ``"250ms"``, ``"20us"`` or a non-negative number. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30m' or '20us', got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or value != value:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '30m' or '20us', got {value!r}")
    if _NEGATIVE.match(value):
        raise ValueError(f"duration must not be negative, got {value!r}")
    m = _NUM.match(value)
    if not m or m.group(2) not in _TIME_UNITS and m.group(2).lower() not in _TIME_UNITS:
        raise ValueError(f"expected a duration such as '30m', '1h', '150us', got {value!r}")
    unit = m.group(2) if m.group(2) in _TIME_UNITS else m.group(2).lower()
    return float(m.group(1)) * _TIME_UNITS[unit]


def format_size(n: float) -> str:
    """Shortest exact-ish binary rendering: 6442450944 -> '6 GiB'."""
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= size:
            v = n / size
            return f"{v:.0f} {unit}" if float(v).is_integer() else f"{v:.4g} {unit}"
    return f"{int(n)} B"


def format_duration(seconds: float) -> str:
    """Human rendering of a latency or duration: 1.5e-4 -> '150us'."""
    s = abs(seconds)
    if s == 0:
        return "0s"
    if s < 1e-6:
        return f"{seconds * 1e9:.3g}ns"
    if s < 1e-3:
        return f"{seconds * 1e6:.3g}us"
    if s < 1:
        return f"{seconds * 1e3:.3g}ms"
    if s < 120:
        return f"{seconds:.3g}s"
    if s < 7200:
        return f"{seconds / 60:.3g}m"
    return f"{seconds / 3600:.3g}h"
