"""Field types shared by scenario and policy files: sizes with a unit, durations, fractions, names.

Each is an ``Annotated`` type: a validator that turns the TOML value into base units (bytes, seconds)
or raises ``ValueError`` with what is allowed, and the JSON Schema editors see for it.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from memtune.core.names import NAME_MAX_CHARS, name_problem
from memtune.core.vm import SHARES_PER_MB
from memtune.units import GiB, MiB, TiB, format_duration, format_size, parse_duration, parse_size

SIZE_PATTERN = (
    r"^\s*[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*([kKmMgGtT]([iI]?[bB])?|[bB]([yY][tT][eE][sS]?)?)\s*$"
)
DURATION_PATTERN = r"^\s*[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*(ns|us|µs|ms|s|sec|m|min|h|d)?\s*$"
_HAS_UNIT = re.compile(r"[A-Za-z]\s*$")

SIZE_NEEDS_UNIT = "expected a size with a unit such as '6 GiB' or '512 MiB' (plain bytes: '4096 bytes')"
MAX_SIZE = 1 << 50  # 1 PiB: above any host memory the model is meant for
MAX_DURATION = 366 * 86400.0  # a simulated year
SEED_MAX = (1 << 63) - 1


class Bytes(int):
    """A size given where a fraction of the VM's memory is also allowed (resolved per VM)."""


def size_bytes(value: Any, *, lo: int = 0, hi: int = MAX_SIZE) -> int:
    """Bytes from text with a unit (``"6 GiB"``, ``"6442450944 bytes"``) or ``0``; any other bare
    number is refused, since ``memory = 6`` could mean 6 GiB as well as 6 bytes."""
    if value == 0 and type(value) is int:
        return 0  # zero is zero in any unit
    if not isinstance(value, str) or not _HAS_UNIT.search(value):
        raise ValueError(SIZE_NEEDS_UNIT)
    try:
        n = parse_size(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if not lo <= n <= hi:
        raise ValueError(f"must be within {format_size(lo)} .. {format_size(hi)}")
    return n


def _size_validator(lo: int, hi: int) -> Any:
    return BeforeValidator(lambda v: size_bytes(v, lo=lo, hi=hi))


def _size_schema(lo: int, hi: int, what: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": SIZE_PATTERN,
            "examples": ["4 GiB", "512 MiB"],
            "description": f"{what}: a size with a unit (KiB, MiB, GiB, TiB; kB, MB, GB, TB "
            f"are powers of 1000; '4096 bytes'), {format_size(lo)} .. "
            f"{format_size(hi)}",
        }
    )


def Size(lo: int = 0, hi: int = MAX_SIZE, what: str = "size") -> Any:  # noqa: N802 (a type factory)
    """Bytes, given as a size with a unit, within ``lo .. hi``."""
    return Annotated[int, _size_validator(lo, hi), _size_schema(lo, hi, what)]


def duration_seconds(value: Any, *, positive: bool = False, hi: float = MAX_DURATION) -> float:
    """Seconds from ``"30m"``, ``"250ms"`` or a number of seconds; finite, within range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a duration must be a finite number of seconds or text such as '30m'")
    try:
        s = parse_duration(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if not math.isfinite(s) or s > hi:
        raise ValueError(f"must be at most {hi / 86400:g} days" if hi >= 86400 else
                         f"must be at most {format_duration(hi)}")
    if positive and s <= 0:
        raise ValueError("must be greater than zero")
    return s


def Duration(positive: bool = False, hi: float = MAX_DURATION) -> Any:  # noqa: N802
    """Seconds, given as ``"30m"`` / ``"250ms"`` or a number of seconds."""
    return Annotated[
        float,
        BeforeValidator(lambda v: duration_seconds(v, positive=positive, hi=hi)),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": DURATION_PATTERN},
                    {"type": "number", "minimum": 0, "maximum": hi},
                ],
                "description": "a duration: '30m', '1h', '250ms', '20us' or seconds"
                + (", greater than zero" if positive else ""),
            }
        ),
    ]


def _fraction_or_size(value: Any, most: float) -> float | Bytes:
    if isinstance(value, str):
        return Bytes(size_bytes(value))
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= most
    ):
        raise ValueError(
            f"expected a fraction 0..{most:g} of the VM's configured memory, or a size such as '2 GiB'"
        )
    return float(value)


def FractionOrSize(most: float = 1.0) -> Any:  # noqa: N802 (a type factory)
    """A fraction ``0..most`` of the VM's configured memory, or a size (resolved per VM)."""
    return Annotated[
        Any,
        BeforeValidator(lambda v: _fraction_or_size(v, most)),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "number", "minimum": 0, "maximum": most},
                    {"type": "string", "pattern": SIZE_PATTERN},
                ],
                "description": f"a fraction 0..{most:g} of the VM's configured memory, or a size such as '2 "
                               f"GiB'",
            }
        ),
    ]


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Name = Annotated[
    str,
    AfterValidator(_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": NAME_MAX_CHARS,
            "description": "a name: no control, invisible or line-break characters",
        }
    ),
]


def _shares(value: Any) -> str | int:
    if isinstance(value, str) and value in SHARES_PER_MB:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1 << 40:
        return value
    raise ValueError("expected low, normal, high or a positive whole number")


Shares = Annotated[
    Any,
    BeforeValidator(_shares),
    WithJsonSchema(
        {
            "anyOf": [{"enum": list(SHARES_PER_MB)}, {"type": "integer", "minimum": 1}],
            "description": "sched.mem.shares: low, normal, high (5/10/20 per MB) or a number",
        }
    ),
]

VM_MIN = 1 * MiB  # the smallest VM (vSphere's own minimum is 4 MB; a profiled process may be smaller)
VM_MAX = 24 * TiB  # vSphere 8's largest
HOST_MIN = 64 * MiB

__all__ = [
    "Bytes",
    "Duration",
    "Fraction",
    "FractionOrSize",
    "GiB",
    "HOST_MIN",
    "MAX_DURATION",
    "MAX_SIZE",
    "Name",
    "SIZE_PATTERN",
    "Shares",
    "Size",
    "VM_MAX",
    "VM_MIN",
    "duration_seconds",
    "size_bytes",
]
