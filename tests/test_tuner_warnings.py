"""The optimizer path raises no deprecation or future warning from numpy, scikit-learn, scipy or
scikit-optimize, so an upgrade that will break the archived scikit-optimize is seen here first, and
no warning other than the understood ones in memtune.tuner.optimizer_warnings reaches users."""

from __future__ import annotations

import warnings

import pytest

from memtune.tuner.loop import TuneConfig, Tuner

LIBRARIES = ("numpy", "scipy", "sklearn", "skopt")


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["gp", "forest"])
def test_optimizer_path_emits_no_deprecation_or_future_warning(optimizer, tiny, tmp_path):
    sc = tiny
    cfg = TuneConfig(sc, budget=12, batch=4, repeats=1, initial_points=4, knobs=("reservation", "limit"),
                     duration=40.0, presets=("esxi-default",), optimizer=optimizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner = Tuner(cfg, tmp_path / optimizer)
        history = tuner.run()
    assert any(e.batch == 1 for e in history), "the model never proposed a batch"
    from_libraries = [w for w in caught if any(f"/{lib}/" in w.filename for lib in LIBRARIES)]
    bad = [w for w in from_libraries if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning,
                                                                 FutureWarning))]
    assert not bad, "\n".join(f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in bad)
    # the understood warnings are filtered; anything else from the libraries is new and must be read
    assert not from_libraries, "\n".join(f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
                                         for w in from_libraries)
