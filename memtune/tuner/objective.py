"""What the tuner minimises, computed from per-VM results averaged over the repeats of a point.

Objectives (``--objective``), each a weighted mean over VMs:

- ``stall`` (default): stall fraction (time stalled on memory / time running, like PSI "some");
- ``mean-latency``: mean extra latency per touch, seconds;
- ``p99-latency``: 99th percentile of extra latency per touch, seconds;
- ``weighted``: stall fraction with the user's per-VM weights (``--weight web=3``), required.

The VM weights are the VMs' shares as the *scenario* configures them (not as the point under test
sets them, or the tuner could lower the objective by moving shares between VMs); ``--weight
NAME=W`` (a VM or a VM group; VMs not named keep weight 1) replaces them for any objective.

SLO mode (``--slo-p99 20us``): minimise reserved memory (sum of reservations / host memory)
subject to every VM's p99 extra latency <= the SLO. A point that misses the SLO is told
``1 + max_p99 / slo`` (> 1, worse than any point that meets it, and still ordered by how far it
misses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memtune.core.scenario import Scenario
from memtune.errors import UserError

KINDS = ("stall", "mean-latency", "p99-latency", "weighted")
METRIC_OF = {"stall": "stall", "mean-latency": "mean_latency", "p99-latency": "p99_latency",
             "weighted": "stall"}
UNITS = {"stall": "fraction", "mean-latency": "seconds", "p99-latency": "seconds", "weighted": "fraction"}


@dataclass(frozen=True)
class Objective:
    """The objective of a tuning run (see the module docstring)."""

    kind: str = "stall"
    weights: dict[str, float] = field(default_factory=dict)
    slo_p99: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"expected one of {', '.join(KINDS)}, got {self.kind!r}", field="--objective")
        if self.kind == "weighted" and not self.weights:
            raise UserError(
                "the weighted objective needs per-VM weights (--weight NAME=W)", field="--objective"
            )
        if self.slo_p99 is not None and not self.slo_p99 > 0:
            raise UserError("must be greater than zero", field="--slo-p99")

    @property
    def label(self) -> str:
        if self.slo_p99 is not None:
            return f"reserved memory share with p99 <= {self.slo_p99 * 1e6:g}us"
        what = {
            "stall": "stall fraction",
            "mean-latency": "mean extra latency (s)",
            "p99-latency": "p99 extra latency (s)",
            "weighted": "stall fraction",
        }[self.kind]
        return f"{'user' if self.weights else 'share'}-weighted {what}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "weights": dict(sorted(self.weights.items())),
            "slo_p99": self.slo_p99,
            "label": self.label,
        }

    def vm_weights(self, scenario: Scenario, groups: Mapping[str, Sequence[str]]) -> np.ndarray:
        """Weight of each VM of ``scenario`` (normalised to sum 1)."""
        names = [v.name for v in scenario.vms]
        if self.weights:
            w = np.ones(len(names))
            index = {n: i for i, n in enumerate(names)}
            for key, value in self.weights.items():
                members = [key] if key in index else list(groups.get(key, ()))
                if not members:
                    raise UserError(
                        f"{key!r} is neither a VM nor a VM group (groups: {', '.join(groups)})",
                        field="--weight",
                    )
                for m in members:
                    w[index[m]] = value
        else:
            w = np.array([v.shares_number for v in scenario.vms], dtype=np.float64)
        total = w.sum()
        if not total > 0:
            raise UserError("weights add up to zero", field="--weight")
        return w / total

    def value(self, metrics: Mapping[str, Any], weights: np.ndarray) -> float:
        """The objective of one evaluation from its averaged per-VM ``metrics``."""
        if self.slo_p99 is not None:
            worst = float(np.max(metrics["p99_latency"]))
            if worst > self.slo_p99:
                return 1.0 + worst / self.slo_p99
            return float(metrics["reserved_share"])
        values = np.asarray(metrics[METRIC_OF[self.kind]], dtype=np.float64)
        return float(np.dot(weights, values))


def parse_weights(items: Sequence[str]) -> dict[str, float]:
    """``["web=3", "db=1.5"]`` -> ``{"web": 3.0, "db": 1.5}``."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            w = float(text)
        except ValueError:
            w = float("nan")
        if not sep or not name.strip() or not w >= 0 or w == float("inf"):
            raise UserError(f"expected NAME=WEIGHT with a weight >= 0, got {item!r}", field="--weight")
        out[name.strip()] = w
    return out
