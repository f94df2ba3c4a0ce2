"""Tuner figures (issue 5), reported as ratios on the same seeds.

    python -m benchmarks.tuner [--quick] [--only tuned,search,wall] [--out FILE]
    python -m benchmarks.tuner compare --seeds N --scenarios db,small,vdi --out FILE   (see tuner_compare)
    python -m benchmarks.run --only tuner

- ``tuned``: best policy / ``esxi-default`` objective (share-weighted stall fraction) on ``small``,
  ``vdi`` and ``db``, both simulated on the run's report seeds (target <= 0.5);
- ``search``: GP after 40 evaluations vs random search after 40 and 400, as the share of the
  improvement over ``esxi-default`` that random search finds with 400 (target: GP@40 >= 90 %);
  every best point is re-simulated on the same report seeds;
- ``wall``: wall time of a 50-evaluation run on ``small`` with 2 workers (target < 60 s), and the
  parallel efficiency 1 -> 2 workers on the same evaluations (a run's points do not depend on the
  worker count, so both runs simulate exactly the same policies): T1 / (2 x T2).

Each figure records the machine load at its start: on a shared 2-core machine wall times are
upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memtune.core.scenario import load_scenario
from memtune.tuner.evaluate import EvalTask, report_seeds
from memtune.tuner.executors import make_executor
from memtune.tuner.job import tune
from memtune.tuner.loop import TuneConfig, Tuner
from memtune.tuner.report import write_outputs


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def tuned_vs_default(scenario: str, *, budget: int = 40, workers: int = 2, repeats: int = 1,
                     optimizer: str = "gp", duration: float | None = None, knobs: tuple[str, ...] = (),
                     check_seeds: int = 4) -> dict:
    """Tune ``scenario`` and compare the best policy with esxi-default on the report seeds; then
    both again on ``check_seeds`` report seeds (``ratio_check_seeds``: mean stall over mean
    stall), since on `vdi` one seed's boot storm may or may not reach the low state."""
    load = _load()
    t0 = time.perf_counter()
    cfg = TuneConfig(load_scenario(scenario), budget=budget, repeats=repeats, optimizer=optimizer,
                     duration=duration, knobs=knobs)
    with tempfile.TemporaryDirectory() as out, make_executor(workers) as ex:
        tuner = Tuner(cfg, Path(out), executor=ex, compare_early=True)
        tuner.run()
        report = write_outputs(tuner, tuner.compare(tuner.best()), plots=False)
        tuner.journal.close()
        wall = time.perf_counter() - t0
        best = tuner.best()
        check = _resimulate(tuner, {"best": best.assignment}, ex, n=check_seeds) if best else None
    base = report["presets"]["esxi-default"]
    return {
        "scenario": scenario,
        "budget": budget,
        "optimizer": optimizer,
        "workers": workers,
        "repeats": repeats,
        "evaluations": report["evaluations"],
        "infeasible": report["infeasible"],
        "best": report["best"]["value"] if report["best"] else None,
        "esxi_default": base.get("value"),
        "ratio": report["ratio_to_baseline"],
        "target_ratio": 0.5,
        "ratio_check_seeds": check["best"] / check["esxi-default"] if check else None,
        "check_seeds": check_seeds,
        "presets": {k: v.get("value") for k, v in report["presets"].items()},
        "wall_s": round(wall, 1),
        "load_at_start": load,
    }


def _best_after(tuner: Tuner, n: int) -> Any:
    feas = [e for e in tuner.history[:n] if e.feasible and e.value is not None]
    return min(feas, key=lambda e: (e.value, e.index)) if feas else None


def _resimulate(
    tuner: Tuner, assignments: dict[str, dict], executor: Any, n: int | None = None
) -> dict[str, float]:
    """Objective of each assignment (and esxi-default) on the run's report seeds (``n`` of them;
    default at least 2), per-VM metrics averaged over the seeds."""
    from memtune.policies import apply_policy, load_policy

    c = tuner.config
    seeds = report_seeds(c.seed, n or max(2, c.repeats))
    tasks = [
        EvalTask(
            "esxi-default",
            apply_policy(load_policy("esxi-default"), tuner.base, registry=tuner.space.registry),
            seeds,
        )
    ]
    for name, a in assignments.items():
        _, sc, _ = tuner._policy_scenario(a, name, full=True)
        tasks.append(EvalTask(name, sc, seeds))
    return {str(r["index"]): c.objective.value(r["metrics"], tuner.weights) for r in executor.run(tasks)}


def gp_vs_random(
    scenario: str = "db",
    *,
    workers: int = 2,
    duration: float | None = None,
    knobs: tuple[str, ...] = (),
    small: int = 40,
    large: int = 400,
    workdir: str | None = None,
) -> dict:
    """GP at ``small`` evaluations vs random search at ``small`` and ``large``, same seeds.

    With ``workdir`` the journals are kept there, and an interrupted comparison resumes."""
    load = _load()
    t0 = time.perf_counter()
    sc = load_scenario(scenario)
    out: dict[str, Any] = {
        "scenario": scenario,
        "duration": duration,
        "knobs": list(knobs),
        "load_at_start": load,
    }
    with tempfile.TemporaryDirectory() as tmp, make_executor(workers) as ex:
        d = Path(workdir or tmp)
        gp = Tuner(
            TuneConfig(sc, budget=small, repeats=1, optimizer="gp", duration=duration, knobs=knobs),
            d / "gp",
            executor=ex,
            resume=workdir is not None,
        )
        gp.run()
        rnd = Tuner(
            TuneConfig(sc, budget=large, repeats=1, optimizer="random", duration=duration, knobs=knobs),
            d / "rnd",
            executor=ex,
            resume=workdir is not None,
        )
        rnd.run()
        picks = {
            f"gp@{small}": _best_after(gp, small),
            f"random@{small}": _best_after(rnd, small),
            f"random@{large}": _best_after(rnd, large),
        }
        values = _resimulate(gp, {k: e.assignment for k, e in picks.items() if e is not None}, ex)
    base = values["esxi-default"]
    gain = {k: base - v for k, v in values.items() if k != "esxi-default"}
    ref = gain.get(f"random@{large}")
    out.update(
        {
            "esxi_default": base,
            "values": values,
            "search_values": {k: (e.value if e else None) for k, e in picks.items()},
            "gp_share_of_random_large_gain": (gain[f"gp@{small}"] / ref) if ref and ref > 0 else None,
            "random_small_share": (gain[f"random@{small}"] / ref) if ref and ref > 0 else None,
            "target_share": 0.9,
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    )
    return out


def wall_and_efficiency(
    scenario: str = "small", *, budget: int = 50, eff_budget: int = 12, duration: float | None = None
) -> dict:
    """Wall time of a ``budget``-evaluation run with 2 workers; efficiency 1 -> 2 workers on the
    first ``eff_budget`` evaluations (the same points either way)."""
    sc = load_scenario(scenario)
    res: dict[str, Any] = {"scenario": scenario, "budget": budget, "load_at_start": _load()}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        with make_executor(2) as ex:
            tune(
                TuneConfig(sc, budget=budget, duration=duration, presets=()),
                Path(d) / "w2",
                executor=ex,
                plots=False,
            )
        res["wall_2_workers_s"] = round(time.perf_counter() - t0, 1)
        res["target_s"] = 60
        times = {}
        for w in (1, 2):
            t0 = time.perf_counter()
            with make_executor(w) as ex:
                Tuner(
                    TuneConfig(sc, budget=eff_budget, duration=duration), Path(d) / f"e{w}", executor=ex
                ).run()
            times[w] = time.perf_counter() - t0
        res["efficiency_budget"] = eff_budget
        res["wall_1_worker_s"] = round(times[1], 1)
        res["wall_2_workers_eff_s"] = round(times[2], 1)
        res["parallel_efficiency"] = round(times[1] / (2 * times[2]), 3)
        res["load_at_end"] = _load()
    return res


def run(quick: bool = False, only: tuple[str, ...] = ("tuned", "search", "wall")) -> dict:
    """All tuner figures (``quick``: shorter runs for a smoke check, not the reported figures)."""
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    if "tuned" in only:
        out["tuned"] = [tuned_vs_default(s, budget=12 if quick else 40) for s in ("small", "vdi", "db")]
    if "search" in only:
        out["search"] = gp_vs_random(
            "db", small=12 if quick else 40, large=24 if quick else 400, duration=600.0
        )
    if "wall" in only:
        out["wall"] = wall_and_efficiency(budget=8 if quick else 50, eff_budget=4 if quick else 12)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from benchmarks.tuner_compare import main as compare

        return compare(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="tuned,search,wall")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    figures = run(args.quick, tuple(x.strip() for x in args.only.split(",")))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
