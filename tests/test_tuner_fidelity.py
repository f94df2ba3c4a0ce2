"""Coarse evaluations: the search simulates with larger pages, the report at full resolution."""

from __future__ import annotations

import json

import pytest

from memtune.errors import ConfigError, UserError
from memtune.policies import apply_policy, load_policy
from memtune.tuner.config import coarse_scenario, eval_scenario
from memtune.tuner.evaluate import EvalTask, eval_seeds, run_task
from memtune.tuner.job import tune
from memtune.tuner.loop import JOURNAL, TuneConfig, Tuner


def cfg(scenario, **kw):
    base = dict(budget=4, batch=4, repeats=1, initial_points=4, knobs=("reservation", "limit"), duration=40.0,
                presets=("esxi-default",), optimizer="random")
    base.update(kw)
    return TuneConfig(scenario, **base)


def test_coarse_scenario_doubles_the_page_size_only(tiny):
    sc = eval_scenario(tiny, 40.0)
    c = coarse_scenario(sc)
    assert c.host.page_scale == 2 * sc.host.page_scale == 32
    assert (c.tick, c.duration, c.warmup, c.vms, c.settings) == (sc.tick, sc.duration, sc.warmup, sc.vms,
                                                                  sc.settings)


@pytest.mark.slow
def test_search_is_coarse_and_the_report_full(tiny, tmp_path):
    report = tune(cfg(tiny), tmp_path, plots=False)
    seeds = eval_seeds(tiny.seed, 0, 1)
    default = apply_policy(load_policy("esxi-default"), eval_scenario(tiny, 40.0))
    coarse = run_task(EvalTask(0, coarse_scenario(default), seeds))["metrics"]["stall"]
    full = run_task(EvalTask(0, default, seeds))["metrics"]["stall"]
    assert coarse != full          # the two resolutions really differ ...
    # ... and evaluation 0 (the esxi-default point) was simulated coarse
    assert report["history"][0]["metrics"]["stall"] == coarse
    assert report["evaluation_fidelity"] == {"name": "coarse", "tick": 2.0, "page_scale": 32}


@pytest.mark.slow
def test_full_fidelity_evaluates_the_scenario_itself(tiny, tmp_path):
    report = tune(cfg(tiny, fidelity="full"), tmp_path, plots=False)
    default = apply_policy(load_policy("esxi-default"), eval_scenario(tiny, 40.0))
    full = run_task(EvalTask(0, default, eval_seeds(tiny.seed, 0, 1)))["metrics"]["stall"]
    assert report["history"][0]["metrics"]["stall"] == full
    assert report["evaluation_fidelity"]["tick"] == tiny.tick


@pytest.mark.slow
def test_resume_with_another_fidelity_is_refused(tiny, tmp_path):
    Tuner(cfg(tiny), tmp_path).run()
    start = json.loads((tmp_path / JOURNAL).read_text().splitlines()[0])
    assert start["fidelity"]["name"] == "coarse"
    with pytest.raises(ConfigError, match="fidelity"):
        Tuner(cfg(tiny, fidelity="full"), tmp_path, resume=True)


def test_unknown_fidelity_is_a_user_error(tiny):
    with pytest.raises(UserError, match="--fidelity"):
        cfg(tiny, fidelity="fine")
