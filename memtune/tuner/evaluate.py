"""Evaluating one point: admission check, then one simulation per seed (runs in worker processes).

This module imports only the core (not scikit-optimize), so worker processes start quickly.
Everything a worker needs travels in an :class:`EvalTask`; the result is plain data.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.core.engine import Engine
from memtune.core.plugins import MemtunePluginManager, build_plugin_manager
from memtune.core.scenario import Scenario
from memtune.core.simulation import build_host
from memtune.errors import AdmissionError

VM_METRICS = ("stall", "mean_latency", "p99_latency")


def derive_seed(run_seed: int, *key: int | str) -> int:
    """A 32-bit seed from the run seed and a key (evaluation index and repeat, or a label)."""
    parts = tuple(k if isinstance(k, int) else zlib.crc32(k.encode()) for k in key)
    ss = np.random.SeedSequence(entropy=int(run_seed), spawn_key=parts)
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def eval_seeds(run_seed: int, index: int, repeats: int) -> tuple[int, ...]:
    """Seeds of evaluation ``index``: the same for every evaluation (common random numbers), so the
    optimizer compares policies on the same workload draws instead of chasing seed noise. The report
    compares on other seeds (``report_seeds``), an out-of-sample check of the best point."""
    return tuple(derive_seed(run_seed, "eval", r) for r in range(repeats))


def report_seeds(run_seed: int, repeats: int) -> tuple[int, ...]:
    """Seeds on which the best point, the default and the presets are compared."""
    return tuple(derive_seed(run_seed, "report", r) for r in range(repeats))


@dataclass(frozen=True)
class EvalTask:
    """One point to simulate: the scenario with the point applied, and its seeds."""

    index: int | str
    scenario: Scenario
    seeds: tuple[int, ...]
    disable: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    # early stop (stall objectives): end the evaluation once its objective is sure to exceed
    # ``stop_above``, given the VMs' ``weights`` (see StallBound)
    stop_above: float | None = None
    weights: tuple[float, ...] | None = None


class _Stopped(Exception):
    """Raised from the engine's progress callback to end a run that cannot do well."""


class StallBound:
    """A lower bound on a run's final stall objective while it runs, to stop hopeless points.

    The stall fraction of VM v is ``min(S, R) / R`` at the end (S seconds stalled, R running, both
    counted after the warm-up). Both only grow, and R by at most the simulated time left, so at
    any tick ``min(s, r) / (r + left)`` is at most the final fraction; the weighted mean of these
    bounds (over the repeats: seeds not run yet count 0) is at most the final objective. A run
    whose bound passes ``stop_above`` can end there: its final value is certainly above it."""

    def __init__(self, weights: np.ndarray, n_seeds: int, stop_above: float) -> None:
        self.w = weights
        self.n = n_seeds
        self.stop_above = stop_above
        self.done = 0.0             # sum over finished seeds of their weighted stall fraction

    def bound(self, stall: np.ndarray, running: np.ndarray, left: float) -> float:
        s = np.minimum(stall, running)
        per_vm = np.divide(s, running + left, out=np.zeros_like(s), where=running + left > 0)
        return (self.done + float(self.w @ per_vm)) / self.n

    def estimate(self, stall: np.ndarray, running: np.ndarray, seeds_left: int) -> np.ndarray:
        """Per-VM stall fractions told for a stopped run: the finished seeds' share, and the
        fraction so far of the current run standing for it and the seeds not run."""
        frac = np.divide(np.minimum(stall, running), running, out=np.zeros_like(stall), where=running > 0)
        return frac * (1 + seeds_left) / self.n


_PM_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...]], MemtunePluginManager] = {}


def _plugin_manager(disable: tuple[str, ...], plugins: tuple[str, ...]) -> MemtunePluginManager:
    key = (tuple(sorted(set(disable))), tuple(plugins))
    pm = _PM_CACHE.get(key)
    if pm is None:
        pm = _PM_CACHE[key] = build_plugin_manager(disable=key[0], modules=plugins)
    return pm


def _run_one(task: EvalTask, seed: int, pm: MemtunePluginManager, watch: StallBound | None,
             seeds_left: int) -> dict[str, Any]:
    """One simulation of ``task``; with ``watch``, raises :class:`_Stopped` (carrying per-VM
    metrics) once the stall bound passes its threshold."""
    host = build_host(task.scenario, seed=seed, pm=pm, admission="strict")
    engine = Engine(host)
    end = task.scenario.duration
    progress = None
    if watch is not None:
        def progress(_: float) -> None:
            book = host.book
            if host.now >= task.scenario.warmup and \
                    watch.bound(book.stall, book.running, end - host.now) > watch.stop_above:
                raise _Stopped({"stall": watch.estimate(book.stall, book.running, seeds_left),
                                "stopped_at": host.now / end})
    return engine.run(progress=progress)


def run_task(task: EvalTask) -> dict[str, Any]:
    """Simulate ``task.scenario`` once per seed; per-VM metrics averaged over the seeds. With
    ``task.stop_above``, a run sure to end above it stops early: the result has ``stopped`` and
    per-VM ``stall`` estimates only (see :class:`StallBound`)."""
    t0, c0 = time.perf_counter(), time.process_time()
    pm = _plugin_manager(tuple(task.disable) + tuple(task.scenario.disable), tuple(task.plugins))
    per_seed: list[dict[str, Any]] = []
    sums = {k: np.zeros(len(task.scenario.vms)) for k in VM_METRICS}
    reserved = 0.0
    watch = None
    if task.stop_above is not None and task.weights is not None:
        watch = StallBound(np.asarray(task.weights, dtype=np.float64), len(task.seeds), task.stop_above)
    for k, seed in enumerate(task.seeds):
        try:
            result = _run_one(task, seed, pm, watch, len(task.seeds) - 1 - k)
        except AdmissionError as exc:
            return {"index": task.index, "feasible": False, "reason": str(exc),
                    "elapsed": time.perf_counter() - t0, "cpu": time.process_time() - c0}
        except _Stopped as stop:
            metrics = dict(stop.args[0])
            metrics["stall"] = [float(x) for x in metrics["stall"] + sums["stall"] / len(task.seeds)]
            return {"index": task.index, "feasible": True, "stopped": True, "metrics": metrics,
                    "per_seed": per_seed, "elapsed": time.perf_counter() - t0,
                        "cpu": time.process_time() - c0}
        for key in VM_METRICS:
            sums[key] += [vm[key] for vm in result["vms"]]
        if watch is not None:
            watch.done += float(watch.w @ np.asarray([vm["stall"] for vm in result["vms"]]))
        reserved = result["host"]["reserved"]
        h = result["host"]
        per_seed.append(
            {
                "seed": seed,
                "stall": h["stall"],
                "mean_latency": h["mean_latency"],
                "p99_latency": h["p99_latency"],
            }
        )
    n = len(task.seeds)
    metrics: dict[str, Any] = {k: [float(x) for x in v / n] for k, v in sums.items()}
    metrics["reserved"] = float(reserved)
    metrics["reserved_share"] = float(reserved / task.scenario.host.memory)
    return {
        "index": task.index,
        "feasible": True,
        "metrics": metrics,
        "per_seed": per_seed,
        "elapsed": time.perf_counter() - t0,
        "cpu": time.process_time() - c0,
    }
