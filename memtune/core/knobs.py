"""Tunable knobs: dimensions of the tuner's search space, contributed by the core and plugins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    """One search dimension.

    ``target`` is ``"host"`` (``name`` is a host setting such as ``Mem.ShareScanTime``) or ``"vm"``
    (``name`` is a per-VM field: ``reservation``, ``limit``, ``shares``, ``maxmemctl``; then
    ``low``/``high`` are fractions of the VM's configured memory, or share numbers).
    ``kind`` is ``"real"``, ``"int"`` or ``"categorical"``; ``prior`` is skopt's (``uniform`` or
    ``log-uniform``).
    """

    name: str
    target: str = "host"
    kind: str = "real"
    low: float | None = None
    high: float | None = None
    categories: tuple[Any, ...] | None = None
    prior: str = "uniform"
    owner: str = "core"
    help: str = ""
