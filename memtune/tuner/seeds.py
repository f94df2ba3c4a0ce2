"""Which workload seeds a model-guided run evaluates its points on: the baseline's hardest.

Every evaluation of a run uses the same seeds (common random numbers, see
:func:`memtune.tuner.evaluate.eval_seeds`). A seed whose workload holds no stress the policies can
act on (on `vdi`, a boot storm that never reaches the low state) scores every point alike, and the
search picks noise; the held-out ratio is a ratio of means, which the stressed seeds dominate. So
before a model-guided search the baseline is simulated on ``tuner.seed_probes`` candidate seeds and
the run evaluates on the ``repeats`` of them where it does worst. The choice is journaled (a
``probe`` record), so a resumed run keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from memtune.tuner.evaluate import EvalTask, eval_seeds

# evaluation index of the baseline (the first point of every design)
BASELINE_INDEX = 0


def candidate_seeds(run_seed: int, repeats: int, probes: int) -> tuple[int, ...]:
    """The seeds probed: the run's first ``max(probes, repeats)`` evaluation seeds."""
    return eval_seeds(run_seed, BASELINE_INDEX, max(probes, repeats))


def probe_tasks(scenario: Any, seeds: Sequence[int], disable: tuple[str, ...],
                plugins: tuple[str, ...]) -> list[EvalTask]:
    """One simulation of the baseline's ``scenario`` per candidate seed."""
    return [EvalTask(f"probe-{k}", scenario, (s,), disable, plugins) for k, s in enumerate(seeds)]


def hardest(seeds: Sequence[int], values: Sequence[float | None], repeats: int) -> tuple[int, ...]:
    """The ``repeats`` seeds where the baseline's objective is highest (an earlier seed first among
    equals; a seed the baseline could not run on counts lowest), in candidate order."""
    order = sorted(range(len(seeds)), key=lambda k: (-(values[k] if values[k] is not None else -1.0), k))
    keep = sorted(order[:repeats])
    return tuple(int(seeds[k]) for k in keep)


def probe_record(seeds: Sequence[int], values: Sequence[float | None], chosen: Sequence[int],
                 cpu: float) -> dict[str, Any]:
    """The journal record of a probe: candidates, the baseline's values there, the seeds chosen."""
    return {"type": "probe", "seeds": [int(s) for s in seeds],
            "values": [None if v is None else float(v) for v in values],
            "chosen": [int(s) for s in chosen], "cpu": round(cpu, 4)}


def check_probe(rec: dict[str, Any]) -> str | None:
    """What is wrong with a probe record's fields, or None."""
    seeds, values, chosen = rec.get("seeds"), rec.get("values"), rec.get("chosen")
    if not (isinstance(seeds, list) and seeds and all(type(s) is int and s >= 0 for s in seeds)):
        return "probe record: seeds must be a list of whole numbers >= 0"
    if not (isinstance(values, list) and len(values) == len(seeds)
            and all(v is None or (type(v) in (int, float) and math.isfinite(v) and v >= 0)
                    for v in values)):
        return "probe record: values must be one number >= 0 (or null) per seed"
    if not (isinstance(chosen, list) and chosen and all(s in seeds for s in chosen)):
        return "probe record: chosen must be some of its seeds"
    return None


def probe(executor: Any, scenario: Any, run_seed: int, repeats: int, probes: int,
          value: Callable[[dict[str, Any]], float], disable: tuple[str, ...] = (),
          plugins: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """Simulate the baseline's ``scenario`` on the candidate seeds (nothing else may be pending on
    ``executor``); returns the journal record and the results by seed (``value`` gives a result's
    objective)."""
    seeds = candidate_seeds(run_seed, repeats, probes)
    results: dict[int, dict[str, Any]] = {}
    for res in executor.run(probe_tasks(scenario, seeds, disable, plugins)):
        results[seeds[int(str(res["index"]).rsplit("-", 1)[1])]] = res
    values = [value(results[s]["metrics"]) if results[s].get("feasible") else None for s in seeds]
    cpu = sum(float(r.get("cpu", 0.0)) for r in results.values())
    return probe_record(seeds, values, hardest(seeds, values, repeats), cpu), results
