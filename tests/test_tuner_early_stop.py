"""Early stop of hopeless evaluations: the stall bound never exceeds the final objective, a stopped
run is certainly above its threshold, and runs with stops stay deterministic and resumable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import DiesAfter, Killed

from memtune.core.engine import Engine
from memtune.core.simulation import build_host
from memtune.policies import apply_policy, load_policy
from memtune.tuner import defaults
from memtune.tuner.config import eval_scenario
from memtune.tuner.evaluate import EvalTask, StallBound, run_task
from memtune.tuner.loop import TuneConfig, Tuner
from memtune.tuner.objective import Objective


def _tight(tiny):
    """tiny with low limits: every VM stalls, so the bound has something to grow on."""
    pol = load_policy("esxi-default")
    sc = apply_policy(pol, eval_scenario(tiny, 60.0))
    return sc.replace(vms=tuple(dataclasses.replace(v, limit=v.memory // 4) for v in sc.vms))


@pytest.mark.slow
def test_bound_never_exceeds_the_final_objective_and_reaches_it(tiny):
    sc = _tight(tiny)
    w = Objective().vm_weights(sc, {v.name: (v.name,) for v in sc.vms})
    watch = StallBound(w, 1, np.inf)
    host = build_host(sc, seed=3)
    bounds: list[float] = []

    def progress(_: float) -> None:
        if host.now >= sc.warmup:
            bounds.append(watch.bound(host.book.stall, host.book.running, sc.duration - host.now))

    result = Engine(host).run(progress=progress)
    final = float(w @ np.asarray([vm["stall"] for vm in result["vms"]]))
    assert final > 0.01 and len(bounds) > 5
    assert all(b <= final + 1e-12 for b in bounds)
    assert np.all(np.diff(bounds) >= -1e-12)                 # it only grows
    assert bounds[-1] == pytest.approx(final, rel=1e-9)       # and at the end it is the objective


@pytest.mark.slow
def test_stopped_run_is_above_its_threshold_and_unstopped_run_unchanged(tiny):
    sc = _tight(tiny)
    w = tuple(float(x) for x in Objective().vm_weights(sc, {v.name: (v.name,) for v in sc.vms}))
    full = run_task(EvalTask(0, sc, (5, 6)))
    final = float(np.dot(w, full["metrics"]["stall"]))
    stopped = run_task(EvalTask(0, sc, (5, 6), stop_above=final / 3, weights=w))
    assert stopped["stopped"] and 0 < stopped["metrics"]["stopped_at"] < 1
    assert float(np.dot(w, stopped["metrics"]["stall"])) > final / 3
    kept = run_task(EvalTask(0, sc, (5, 6), stop_above=final * 1.01, weights=w))
    assert "stopped" not in kept and kept["metrics"] == full["metrics"]


def _cfg(scenario, **kw):
    base = dict(
        budget=16,
        batch=4,
        repeats=1,
        initial_points=4,
        knobs=("reservation", "limit"),
        duration=40.0,
        presets=("esxi-default",),
    )
    base.update(kw)
    return TuneConfig(scenario, **base)


@pytest.fixture
def eager(monkeypatch):
    """Stop at the best value itself, so that a tiny run has stopped evaluations."""
    s = defaults.TUNER_SETTINGS["tuner.stop_factor"]
    monkeypatch.setitem(defaults.TUNER_SETTINGS, "tuner.stop_factor", dataclasses.replace(s, default=1.0))


@pytest.mark.slow
def test_runs_with_stops_are_deterministic_and_resume_to_the_same_points(tiny, tmp_path, eager):
    ref = Tuner(_cfg(tiny), tmp_path / "ref").run()
    assert any(e.stopped for e in ref), "no evaluation stopped: the test shows nothing"
    stopped = [e for e in ref if e.stopped]
    assert all(e.value is not None and e.metrics["stopped_at"] < 1 for e in stopped)
    again = Tuner(_cfg(tiny), tmp_path / "again").run()
    assert [(e.x, e.value) for e in again] == [(e.x, e.value) for e in ref]
    with pytest.raises(Killed):
        Tuner(_cfg(tiny), tmp_path / "cut", executor=DiesAfter(10)).run()
    resumed = Tuner(_cfg(tiny), tmp_path / "cut", resume=True).run()
    assert [(e.x, e.value) for e in resumed] == [(e.x, e.value) for e in ref]


def test_early_stop_is_off_for_latency_objectives(tiny):
    assert _cfg(tiny).early_stop
    assert not _cfg(tiny, objective=Objective("mean-latency")).early_stop
    assert not _cfg(tiny, early_stop=False).early_stop
