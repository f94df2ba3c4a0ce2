"""The seed probe of model-guided runs: the points are evaluated on the seeds where the baseline
does worst, the choice is journaled and kept on resume, and random / TPE runs never probe."""

from __future__ import annotations

import json

import pytest

from memtune.errors import ConfigError
from memtune.tuner.defaults import default
from memtune.tuner.evaluate import eval_seeds
from memtune.tuner.journal import read_journal
from memtune.tuner.loop import JOURNAL, TuneConfig, Tuner
from memtune.tuner.seeds import candidate_seeds, hardest


def _cfg(tiny, **kw):
    base = dict(budget=8, batch=4, initial_points=4, knobs=("reservation", "limit"), duration=40.0,
                presets=("esxi-default",))
    base.update(kw)
    return TuneConfig(tiny, **base)


def _records(out, kind):
    lines = (out / JOURNAL).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_hardest_takes_the_highest_values_earliest_first_and_a_failed_seed_last():
    assert hardest([11, 12, 13], [0.1, 0.3, 0.2], 1) == (12,)
    assert hardest([11, 12, 13], [0.2, 0.1, 0.2], 1) == (11,)
    assert hardest([11, 12, 13], [None, 0.0, 0.1], 2) == (12, 13)
    assert hardest([11, 12, 13], [0.5, 0.1, 0.2], 2) == (11, 13)


def test_candidates_start_with_the_seeds_a_run_without_probe_uses():
    assert candidate_seeds(5, 1, 3)[:1] == eval_seeds(5, 0, 1)
    assert len(candidate_seeds(5, 4, 3)) == 4


@pytest.mark.slow
def test_gp_evaluates_on_the_probed_hardest_seed_and_resume_keeps_it(tiny, tmp_path):
    out = tmp_path / "gp"
    hist = Tuner(_cfg(tiny), out).run()
    (probe,) = _records(out, "probe")
    assert len(probe["seeds"]) == default("tuner.seed_probes")
    assert probe["chosen"] == list(hardest(probe["seeds"], probe["values"], 1))
    assert all(list(e.seeds) == probe["chosen"] for e in hist if e.seeds)
    # the baseline (evaluation 0) on the chosen seed is the probe's value there
    assert hist[0].value == pytest.approx(probe["values"][probe["seeds"].index(probe["chosen"][0])])
    # a longer run resumed from this journal probes nothing more and keeps the seeds
    more = Tuner(_cfg(tiny, budget=12), out, resume=True).run()
    assert len(_records(out, "probe")) == 1
    assert all(list(e.seeds) == probe["chosen"] for e in more if e.seeds)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["random", "tpe"])
def test_random_and_tpe_runs_never_probe(tiny, tmp_path, optimizer):
    out = tmp_path / optimizer
    hist = Tuner(_cfg(tiny, optimizer=optimizer), out).run()
    assert _records(out, "probe") == []
    assert {tuple(e.seeds) for e in hist if e.seeds} == {eval_seeds(_cfg(tiny).seed, 0, 1)}


@pytest.mark.parametrize("bad", [{"chosen": [7]}, {"values": [0.1]}, {"seeds": [-1, 2]}])
def test_a_damaged_probe_record_is_refused_naming_the_line(tmp_path, bad):
    path = tmp_path / JOURNAL
    start = {"type": "start", "version": 1}
    probe = {"type": "probe", "seeds": [1, 2], "values": [0.1, 0.2], "chosen": [2], "cpu": 1.0} | bad
    path.write_text(json.dumps(start) + "\n" + json.dumps(probe) + "\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_journal(path)
