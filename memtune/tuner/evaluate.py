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

from memtune.core.plugins import MemtunePluginManager, build_plugin_manager
from memtune.core.scenario import Scenario
from memtune.core.simulation import simulate
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


_PM_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...]], MemtunePluginManager] = {}


def _plugin_manager(disable: tuple[str, ...], plugins: tuple[str, ...]) -> MemtunePluginManager:
    key = (tuple(sorted(set(disable))), tuple(plugins))
    pm = _PM_CACHE.get(key)
    if pm is None:
        pm = _PM_CACHE[key] = build_plugin_manager(disable=key[0], modules=plugins)
    return pm


def run_task(task: EvalTask) -> dict[str, Any]:
    """Simulate ``task.scenario`` once per seed; per-VM metrics averaged over the seeds."""
    t0, c0 = time.perf_counter(), time.process_time()
    pm = _plugin_manager(tuple(task.disable) + tuple(task.scenario.disable), tuple(task.plugins))
    per_seed: list[dict[str, Any]] = []
    sums = {k: np.zeros(len(task.scenario.vms)) for k in VM_METRICS}
    reserved = 0.0
    for seed in task.seeds:
        try:
            result = simulate(task.scenario, seed=seed, pm=pm, admission="strict")
        except AdmissionError as exc:
            return {"index": task.index, "feasible": False, "reason": str(exc),
                    "elapsed": time.perf_counter() - t0, "cpu": time.process_time() - c0}
        for k in VM_METRICS:
            sums[k] += [vm[k] for vm in result["vms"]]
        reserved = result["host"]["reserved"]
        h = result["host"]
        per_seed.append({"seed": seed, "stall": h["stall"], "mean_latency": h["mean_latency"],
                         "p99_latency": h["p99_latency"]})
    n = len(task.seeds)
    metrics: dict[str, Any] = {k: [float(x) for x in v / n] for k, v in sums.items()}
    metrics["reserved"] = float(reserved)
    metrics["reserved_share"] = float(reserved / task.scenario.host.memory)
    return {"index": task.index, "feasible": True, "metrics": metrics, "per_seed": per_seed,
            "elapsed": time.perf_counter() - t0, "cpu": time.process_time() - c0}
