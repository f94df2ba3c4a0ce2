"""The tuner: search the policy knobs for the lowest memory stall / latency (``memtune optimize``).

Public API::

    TuneConfig, Tuner, tune(config, out, resume=, executor=)   the loop and a one-call run
    Objective                                                   what is minimised
    build_space(scenario, pm, group=, knobs=, fix=)             the search space
    make_executor(workers, dask_scheduler)                      serial / local processes / Dask

See ``docs/tuner.md``. Importing this package does not import scikit-optimize; the loop does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Objective", "TuneConfig", "Tuner", "build_space", "make_executor", "tune"]


def __getattr__(name: str) -> Any:
    if name == "TuneConfig":
        from memtune.tuner.config import TuneConfig

        return TuneConfig
    if name == "Tuner":
        from memtune.tuner.loop import Tuner

        return Tuner
    if name == "tune":
        from memtune.tuner.job import tune

        return tune
    if name == "Objective":
        from memtune.tuner.objective import Objective

        return Objective
    if name == "build_space":
        from memtune.tuner.space import build_space

        return build_space
    if name == "make_executor":
        from memtune.tuner.executors import make_executor

        return make_executor
    raise AttributeError(name)
