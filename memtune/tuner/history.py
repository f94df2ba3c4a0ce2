"""The told evaluations of a run, as data: what the proposer, the stopping rules and the report read.

The penalty rule: an infeasible point (the policy fails validation or admission control) is told
``worst + max(margin * (worst - best), 0.1 * |worst|)`` of the feasible values known at that time
(``tuner.no_feasible_penalty`` while none is known): worse than every feasible point, on the same
scale, so the surrogate's normalisation is not swamped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memtune.tuner.defaults import default


@dataclass
class Evaluation:
    """One told point."""

    index: int
    batch: int
    x: list[Any]
    assignment: dict[str, Any]
    feasible: bool
    value: float | None = None
    metrics: dict[str, Any] | None = None
    reason: str | None = None
    seeds: tuple[int, ...] = ()
    elapsed: float = 0.0
    cpu: float = 0.0            # CPU seconds of its simulations

    def record(self) -> dict[str, Any]:
        return {"type": "eval", "index": self.index, "batch": self.batch, "x": self.x,
                "point": self.assignment, "feasible": self.feasible, "value": self.value,
                "reason": self.reason, "seeds": list(self.seeds), "elapsed": round(self.elapsed, 4),
                "cpu": round(self.cpu, 4), "metrics": self.metrics}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Evaluation:
        return cls(index=int(rec["index"]), batch=int(rec["batch"]), x=list(rec["x"]),
                   assignment=dict(rec["point"]), feasible=bool(rec["feasible"]), value=rec.get("value"),
                   metrics=rec.get("metrics"), reason=rec.get("reason"), seeds=tuple(rec.get("seeds", ())),
                   elapsed=float(rec.get("elapsed", 0.0)), cpu=float(rec.get("cpu", 0.0)))

    @property
    def stopped(self) -> bool:
        """Stopped early (the value is an estimate above the stopping threshold)."""
        return bool(self.metrics and "stopped_at" in self.metrics)

    @property
    def ok(self) -> bool:
        """Feasible and simulated: it has an objective value."""
        return self.feasible and self.value is not None


def best(history: Sequence[Evaluation]) -> Evaluation | None:
    """The feasible evaluation with the lowest value (the earliest among equals)."""
    feas = [e for e in history if e.ok]
    return min(feas, key=lambda e: (e.value, e.index)) if feas else None


def since_best(history: Sequence[Evaluation]) -> int:
    """Evaluations told after the best one (all of them while none is feasible)."""
    b = best(history)
    if b is None:
        return len(history)
    return sum(1 for e in history if e.index > b.index)


def penalty(history: Sequence[Evaluation]) -> float:
    """What an infeasible point is told, given the feasible values in ``history``."""
    vals = [e.value for e in history if e.ok]
    if not vals:
        return float(default("tuner.no_feasible_penalty"))
    worst, low = max(vals), min(vals)
    return worst + max(default("tuner.penalty_margin") * (worst - low), 0.1 * abs(worst), 1e-12)


def told(history: Sequence[Evaluation]) -> tuple[list[list[Any]], list[float]]:
    """Points and the values told for them (the penalty for infeasible ones), in ask order."""
    pen = penalty(history)
    return [e.x for e in history], [e.value if e.ok else pen for e in history]
