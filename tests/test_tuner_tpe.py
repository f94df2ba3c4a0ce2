"""``--optimizer tpe`` (Optuna, optional): the presets first when asked, then TPE; same seed, same
points; a killed run resumes to the same points."""

from __future__ import annotations

import pytest

from memtune.tuner.loop import TuneConfig, Tuner

pytest.importorskip("optuna")


def _cfg(scenario, **kw):
    base = dict(budget=12, batch=4, repeats=1, initial_points=4, duration=40.0, presets=("esxi-default",),
                optimizer="tpe", early_stop=False)
    base.update(kw)
    return TuneConfig(scenario, **base)


def test_tpe_starts_from_the_presets_and_is_deterministic(tiny, tmp_path):
    t = Tuner(_cfg(tiny), tmp_path / "a")
    hist = t.run()
    head = [t.baseline_point(), *t.preset_points()]
    assert [e.x for e in hist[:len(head)]] == head
    again = Tuner(_cfg(tiny), tmp_path / "b").run()
    assert [(e.x, e.value) for e in again] == [(e.x, e.value) for e in hist]
    plain = Tuner(_cfg(tiny, design_presets=False), tmp_path / "c").run()
    assert plain[0].x != head[0] and len(plain) == 12
