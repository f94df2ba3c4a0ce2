"""The tuning loop: ask a batch, reject infeasible points, simulate the rest, journal, tell.

The loop only pipelines batches, stops and journals; what it asks comes from
:class:`~memtune.tuner.proposer.Proposer`, given the history as data. Determinism: the batch size
is fixed (not the worker count), every evaluation's seeds derive from (run seed, repeat), and
results are told in ask order however they complete, so a run gives the same numbers with 1, 2 or
8 workers, on Dask or locally, and a resumed run the same as one never interrupted: replaying the
journal *is* telling a fresh optimizer what the killed one knew.

Infeasible points (the policy fails validation or admission control) are never simulated; they
are journaled as infeasible and told the penalty of :func:`memtune.tuner.history.penalty`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import memtune.tuner.history as hist
from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import Scenario
from memtune.errors import ConfigError
from memtune.policies import Policy
from memtune.tuner.compare import Comparison
from memtune.tuner.config import BASELINE, TuneConfig, coarse_scenario, eval_scenario
from memtune.tuner.defaults import default
from memtune.tuner.evaluate import EvalTask, eval_seeds
from memtune.tuner.executors import Executor, SerialExecutor
from memtune.tuner.history import Evaluation
from memtune.tuner.journal import JournalState, open_journal
from memtune.tuner.mapping import admits, policy_point, policy_scenario, preset_points
from memtune.tuner.proposer import Proposer
from memtune.tuner.seeds import probe
from memtune.tuner.space import build_space

JOURNAL = "journal.jsonl"
# batches asked ahead of the history: batch b is asked once batches <= b - 1 - LAG are told (the
# optimizer works while the workers simulate; see Tuner.run)
LAG = 1

__all__ = ["BASELINE", "JOURNAL", "LAG", "Evaluation", "TuneConfig", "Tuner"]


@dataclass
class _Batch:
    """A batch asked and not yet told: its points, finished results and running evaluations."""

    b: int
    first: int
    points: list[list[Any]]
    results: dict[int, Evaluation] = field(default_factory=dict)
    running: dict[int, Evaluation] = field(default_factory=dict)


class Tuner:
    """A tuning run writing to ``out`` (see :func:`memtune.tuner.job.tune` for the one-call form).

    With ``compare_early`` the report's preset simulations are submitted to the executor once the
    loop asks no more batches, so :meth:`compare` must follow :meth:`run` on the same executor."""

    def __init__(self, config: TuneConfig, out: Path, *, resume: bool = False,
                 executor: Executor | None = None,
                 on_eval: Callable[[Evaluation, Tuner], None] | None = None,
                 compare_early: bool = False) -> None:
        self.config = c = config
        self.out = Path(out)
        self.executor = executor or SerialExecutor()
        self.on_eval = on_eval
        self.pm = build_plugin_manager(
            disable=tuple(c.disable) + tuple(c.scenario.disable), modules=c.plugins
        )
        self.base = eval_scenario(c.scenario, c.duration)  # what the report compares on
        # what evaluations simulate
        self.eval_base = coarse_scenario(self.base) if c.fidelity == "coarse" else self.base
        self.space = build_space(self.base, self.pm, group=c.group, knobs=c.knobs, fix=c.fix)
        self.weights = c.objective.vm_weights(self.base, self.space.groups)
        self.proposer = Proposer(c, self.space, self.baseline_point(), preset_points(self.space, self.base),
                                 admits(self.space, self.eval_base))
        self.comparison = Comparison(c, self.space, self.base, self.weights, self.executor)
        self.compare_early = compare_early
        self.history: list[Evaluation] = []
        self.stop_reason = ""
        self.started = time.monotonic()
        self.sim_seconds = 0.0
        self.sim_cpu_seconds = 0.0
        self.optimizer_seconds = 0.0  # proposing batches (in this process, while workers simulate)
        self.optimizer_cpu_seconds = 0.0
        self._journal_path = self.out / JOURNAL
        # batches asked but not yet told, in ask order (at most LAG + 1); on resume, those the
        # journal holds unfinished
        self._inflight: list[_Batch] = []
        # the seeds every evaluation uses (see memtune.tuner.seeds); probed at the start of run()
        self.eval_seeds = eval_seeds(c.seed, 0, c.repeats)
        self._probed = False
        self._prepare(resume)

    # --- set-up and resume ---------------------------------------------------------------------

    def start_record(self) -> dict[str, Any]:
        c = self.config
        return {
            "type": "start",
            "version": 1,
            "scenario": c.scenario.name,
            "source": c.scenario.source,
            "seed": c.seed,
            "budget": c.budget,
            "batch": c.batch,
            "repeats": c.repeats,
            "initial_points": c.n_initial,
            "optimizer": c.optimizer,
            "duration": self.base.duration,
            "fidelity": {
                "name": c.fidelity,
                "tick": self.eval_base.tick,
                "page_scale": self.eval_base.host.page_scale,
            },
            "warmup": self.base.warmup,
            "objective": c.objective.describe(),
            "space": self.space.signature(),
            "plugins": self.pm.plugin_names(),
            "modules": list(c.plugins),
            "early_stop": c.early_stop,
            "design_presets": c.design_presets,
        }

    _MUST_MATCH = (
        "scenario",
        "seed",
        "batch",
        "repeats",
        "initial_points",
        "optimizer",
        "duration",
        "fidelity",
        "warmup",
        "objective",
        "space",
        "plugins",
        "early_stop",
        "design_presets",
    )

    def _prepare(self, resume: bool) -> None:
        # locks --out for this run; refuses a run already there, or nothing to resume, or a journal
        # that does not match this run (see memtune.tuner.journal.open_journal)
        self.journal, state = open_journal(
            self._journal_path,
            resume=resume,
            start=self.start_record(),
            must_match=self._MUST_MATCH,
            plugins=self.pm.info,
        )
        if state is not None:
            try:
                self._load(state)
            except BaseException:
                self.journal.close()
                raise
            self.journal.write({"type": "resume", "told": len(self.history), "time": time.time()})

    def _load(self, state: JournalState) -> None:
        """Rebuild the history from the journal: whole batches in order; the batches after the
        first one the kill cut short (at most ``LAG + 1`` were in flight) keep their finished
        evaluations and re-run the rest."""
        if state.probe is not None:
            self.eval_seeds = tuple(int(s) for s in state.probe["chosen"])
        # a journal asked batches without a probe: its evaluations keep the seeds they had
        self._probed = state.probe is not None or bool(state.batches)
        b = 0
        first = 0
        while b in state.batches:
            rec = state.batches[b]
            points = rec["points"]
            if int(rec["first"]) != first:
                raise ConfigError(
                    f"batch {b} starts at evaluation {rec['first']}, expected {first}",
                    source=str(self._journal_path),
                )
            done = [state.evals.get(first + i) for i in range(len(points))]
            if all(done) and not self._inflight:
                self.history.extend(Evaluation.from_record(r) for r in done)
            else:
                batch = _Batch(b, first, [list(p) for p in points])
                batch.results = {int(r["index"]): Evaluation.from_record(r) for r in done if r}
                self._inflight.append(batch)
            first += len(points)
            b += 1
        if len(self._inflight) > LAG + 1:
            raise ConfigError(
                f"{len(self._inflight)} unfinished batches, a run has at most {LAG + 1} in flight",
                source=str(self._journal_path),
            )

    # --- the space's mappings, the history (thin views for callers holding a Tuner) --------------

    def baseline_point(self) -> list[Any] | None:
        """The ``esxi-default`` policy as a point of the space (the first point of every run), or
        None when it is not representable."""
        return policy_point(self.space, self.base, BASELINE)

    def policy_point(self, name: str) -> list[Any] | None:
        return policy_point(self.space, self.base, name)

    def preset_points(self) -> list[list[Any]]:
        return list(self.proposer.presets)

    def policy_scenario(
        self, assignment: dict[str, Any], name: str, *, full: bool = False
    ) -> tuple[Policy, Scenario | None, str | None]:
        """The policy of ``assignment`` and the scenario it gives: at the evaluations' resolution,
        or with ``full`` at the scenario's own (for comparisons in the report)."""
        return policy_scenario(self.space, self.base if full else self.eval_base, assignment, name)

    _policy_scenario = policy_scenario

    def best(self) -> Evaluation | None:
        return hist.best(self.history)

    def penalty(self) -> float:
        return hist.penalty(self.history)

    def told(self) -> tuple[list[list[Any]], list[float]]:
        return hist.told(self.history)

    def propose(self, b: int, n: int, pending: list[list[Any]] | None = None) -> list[list[Any]]:
        """The ``n`` points of batch ``b`` given this run's history and the ``pending`` points."""
        return self.proposer.propose(b, n, self.history, pending or [])

    # --- running ---------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        c = self.config
        if self.asked() >= c.budget:
            self.stop_reason = "budget"
        elif c.patience is not None and hist.since_best(self.history) >= c.patience:
            self.stop_reason = f"no improvement in {c.patience} evaluations"
        elif c.time_limit is not None and time.monotonic() - self.started >= c.time_limit:
            self.stop_reason = "time limit"
        return bool(self.stop_reason)

    def _next_batch(self) -> int:
        """Number of the batch to ask next: after the last in flight, else after the last told."""
        if self._inflight:
            return self._inflight[-1].b + 1
        return self.history[-1].batch + 1 if self.history else 0

    def asked(self) -> int:
        """Evaluations asked so far: told, and in flight."""
        return len(self.history) + sum(len(bt.points) for bt in self._inflight)

    def run(self) -> list[Evaluation]:
        """Evaluate batches until a stopping rule holds; returns the history.

        Batch ``b`` is asked once every batch up to ``b - 1 - LAG`` is told: with ``LAG`` 1 the
        optimizer proposes batch ``b + 1`` while batch ``b`` is simulated (batch ``b - 1``'s points
        are told to it as pending, with the constant liar's value), and batch ``b + 1``'s tasks queue
        behind ``b``'s, so the workers never wait for the optimizer. What batch ``b`` holds depends
        on the seed, the history of batches ``< b - LAG`` and the points of the batches in between,
        not on timing: a resumed run asks the same points."""
        if not self._probed:
            self._probe_seeds()
        for bt in self._inflight:  # resumed: re-run what had not finished
            self._start_batch(bt)
        asking = True
        while True:
            while asking and len(self._inflight) <= LAG:
                if self._should_stop():
                    asking = False
                    if self.compare_early:
                        self.comparison.start()
                    break
                self._ask_batch()
            if not self._inflight:
                break
            self._finish_first()
        self.journal.write(
            {"type": "end", "told": len(self.history), "reason": self.stop_reason, "time": time.time()}
        )
        return self.history

    def _probe_seeds(self) -> None:
        """Model-guided runs: choose the evaluation seeds where the baseline does worst among
        ``tuner.seed_probes`` candidates (see :mod:`memtune.tuner.seeds`), and journal them."""
        c = self.config
        self._probed = True
        base = self.proposer.baseline
        if c.optimizer not in ("gp", "forest") or base is None or default("tuner.seed_probes") <= c.repeats:
            return
        _, scenario, _ = self.policy_scenario(self.space.assignment(base), "baseline")
        if scenario is None:
            return
        rec, results = probe(self.executor, scenario, c.seed, c.repeats, default("tuner.seed_probes"),
                             lambda m: c.objective.value(m, self.weights), tuple(c.disable), tuple(c.plugins))
        self.eval_seeds = tuple(rec["chosen"])
        self.sim_cpu_seconds += rec["cpu"]
        self.sim_seconds += sum(float(r["elapsed"]) for r in results.values())
        self.journal.write(rec)

    def _ask_batch(self) -> None:
        """Propose the next batch, journal its points before any runs, and submit them."""
        b = self._next_batch()
        n = min(self.config.batch, self.config.budget - self.asked())
        first = self.asked()
        pending = [p for bt in self._inflight for p in bt.points]
        t0, c0 = time.perf_counter(), time.process_time()
        points = self.propose(b, n, pending)
        cpu = time.process_time() - c0
        self.optimizer_seconds += time.perf_counter() - t0
        self.optimizer_cpu_seconds += cpu
        points = [self._native(p) for p in points]
        self.journal.write(
            {"type": "batch", "batch": b, "first": first, "points": points, "cpu": round(cpu, 4)}
        )
        bt = _Batch(b, first, points)
        self._inflight.append(bt)
        self._start_batch(bt)

    def _start_batch(self, bt: _Batch) -> None:
        """Journal the infeasible points of ``bt`` (never simulated) and submit the others."""
        c = self.config
        for i, x in enumerate(bt.points):
            idx = bt.first + i
            if idx in bt.results:
                continue
            assignment = self.space.assignment(x)
            _, scenario, problem = self.policy_scenario(assignment, f"point-{idx}")
            ev = Evaluation(idx, bt.b, x, assignment, feasible=scenario is not None, reason=problem)
            if scenario is None:
                self.journal.write(ev.record())
                bt.results[idx] = ev
                self._notify(ev)
                continue
            ev.seeds = self.eval_seeds
            bt.running[idx] = ev
            self.executor.submit(
                EvalTask(idx, scenario, ev.seeds, tuple(c.disable), tuple(c.plugins), *self._stop_rule(bt.b))
            )

    def _native(self, x: list[Any] | None) -> list[Any] | None:
        return None if x is None else [self.space.dimensions[i].native(v) for i, v in enumerate(x)]

    def _stop_rule(self, b: int) -> tuple[float | None, tuple[float, ...] | None]:
        """Early stop of batch ``b``'s evaluations: ``tuner.stop_factor`` x the best value told
        before it was asked (batches ``< b - LAG``: the same on resume and on any executor)."""
        if not self.config.early_stop:
            return None, None
        known = hist.best([e for e in self.history if e.batch < b - LAG])
        if known is None or not known.value or known.value <= 0:
            return None, None
        return float(default("tuner.stop_factor")) * known.value, tuple(float(w) for w in self.weights)

    def _finish_first(self) -> None:
        """Collect results (of any batch in flight) until the first batch in flight is complete,
        then tell it: append it to the history in ask order."""
        head = self._inflight[0]
        while head.running:
            res = self.executor.next_result()
            if isinstance(res["index"], str):  # the report's, submitted early
                self.comparison.accept(res)
                continue
            self._record(res)
        self._inflight.pop(0)
        self.history.extend(head.results[head.first + i] for i in range(len(head.points)))

    def _record(self, res: dict[str, Any]) -> None:
        """Journal one finished evaluation and keep it with its batch."""
        idx = int(res["index"])
        bt = next(x for x in self._inflight if idx in x.running)
        ev = bt.running.pop(idx)
        ev.elapsed = float(res["elapsed"])
        self.sim_seconds += ev.elapsed
        ev.cpu = float(res.get("cpu", 0.0))
        self.sim_cpu_seconds += ev.cpu
        if not res["feasible"]:  # refused at power-on although the policy validated
            ev.feasible, ev.reason = False, res["reason"]
        else:
            ev.metrics = res["metrics"]
            ev.value = self.config.objective.value(res["metrics"], self.weights)
        self.journal.write(ev.record())
        bt.results[idx] = ev
        self._notify(ev)

    def _notify(self, ev: Evaluation) -> None:
        if self.on_eval is not None:
            self.on_eval(ev, self)

    # --- comparing -------------------------------------------------------------------------------

    def start_comparison(self) -> None:
        """Submit the report's simulations that do not depend on the search (see
        :meth:`Comparison.start`)."""
        self.comparison.start()

    def compare(self, best: Evaluation | None) -> dict[str, Any]:
        """The best point, the baseline and the presets simulated on the same report seeds (at
        full resolution)."""
        return self.comparison.finish(best)
