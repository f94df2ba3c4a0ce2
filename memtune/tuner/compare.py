"""The report's comparison runs: the best point, the baseline and the presets simulated on the
same held-out report seeds, at full resolution.

A :class:`Comparison` hands its simulations to a *runner*: anything with ``submit(EvalTask)`` and
``next_result()`` returning the task's result dict (``index``, ``feasible``, ``metrics`` or
``reason``), as the executors of :mod:`memtune.tuner.executors` do. The loop passes its executor so
the presets run while the last batches finish; another runner (a real host) can measure the same
policies by the same rules.
"""

from __future__ import annotations

from typing import Any, Protocol

from memtune.core.scenario import Scenario
from memtune.errors import UserError
from memtune.policies import apply_policy, list_presets, load_policy
from memtune.tuner.config import BASELINE, TuneConfig
from memtune.tuner.evaluate import EvalTask, report_seeds
from memtune.tuner.history import Evaluation
from memtune.tuner.mapping import policy_scenario
from memtune.tuner.space import SearchSpace


class Runner(Protocol):
    """Where the comparison's simulations run."""

    def submit(self, task: EvalTask) -> None: ...

    def next_result(self) -> dict[str, Any]: ...


class Comparison:
    """The report's simulations: one entry per compared policy (preset, scenario, best), on the
    run's report seeds, and the names whose results have not come back yet."""

    def __init__(self, config: TuneConfig, space: SearchSpace, scenario: Scenario, weights: Any,
                 runner: Runner) -> None:
        self.config = config
        self.space = space
        self.scenario = scenario          # at full resolution
        self.weights = weights
        self.runner = runner
        self.seeds = report_seeds(config.seed, config.repeats)
        self.entries: dict[str, dict[str, Any]] = {}
        self.waiting: set[str] = set()
        self.started = False

    def _submit(self, name: str, scenario: Scenario) -> None:
        c = self.config
        self.waiting.add(name)
        self.runner.submit(EvalTask(name, scenario, self.seeds, tuple(c.disable), tuple(c.plugins)))

    def start(self) -> None:
        """Submit the simulations that do not depend on the search: the presets, or the scenario
        itself when ``esxi-default`` is not compared."""
        if self.started:
            return
        self.started = True
        c = self.config
        names = list_presets() if c.presets is None else list(c.presets)
        for name in names:
            try:
                sc = apply_policy(load_policy(name), self.scenario, registry=self.space.registry)
                problem = None
            except UserError as exc:
                sc, problem = None, exc.message
            self.entries[name] = {"kind": "preset", "feasible": sc is not None, "reason": problem}
            if sc is not None:
                self._submit(name, sc)
        if BASELINE not in names:
            self.entries["scenario"] = {"kind": "scenario", "feasible": True, "reason": None}
            self._submit("scenario", self.scenario)

    def accept(self, res: dict[str, Any]) -> None:
        """Record the result of one of the comparison's simulations."""
        e = self.entries[str(res["index"])]
        self.waiting.discard(str(res["index"]))
        if not res["feasible"]:
            e["feasible"], e["reason"] = False, res["reason"]
            return
        e["metrics"] = res["metrics"]
        e["value"] = self.config.objective.value(res["metrics"], self.weights)

    def finish(self, best: Evaluation | None) -> dict[str, Any]:
        """Add the best point, wait for every result; the comparison as plain data."""
        self.start()
        if best is not None and "best" not in self.entries:
            _, sc, problem = policy_scenario(self.space, self.scenario, best.assignment, "best")
            self.entries["best"] = {"kind": "best", "feasible": sc is not None, "reason": problem,
                                    "index": best.index}
            if sc is not None:
                self._submit("best", sc)
        while self.waiting:
            self.accept(self.runner.next_result())
        return {"seeds": list(self.seeds), "baseline": BASELINE if BASELINE in self.entries else "scenario",
                "entries": self.entries}
