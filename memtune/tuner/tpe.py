"""``--optimizer tpe``: Optuna's tree-structured Parzen estimator (multivariate, constant liar) on
the same space, objective, batches and journal as the other optimizers.

Optuna is optional (``pip install 'memtune[bench]'``): it is the benchmark's reference for what a
user would wire to memtune's objective instead. Each batch is asked from a *fresh* study seeded
with (run seed, batch), told the history in ask order and the pending points as running trials,
so the points stay a function of the seed and the history, as with the GP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memtune.errors import UserError
from memtune.tuner.evaluate import derive_seed
from memtune.tuner.history import Evaluation, told
from memtune.tuner.space import SearchSpace


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError(
            "needs Optuna: pip install 'memtune[bench]' (or optuna)", field="--optimizer"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(space: SearchSpace) -> dict[str, Any]:
    """The space's dimensions as Optuna distributions (log scale for log-uniform knobs)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for d in space.dimensions:
        k = d.knob
        log = k.prior == "log-uniform"
        if k.kind == "categorical":
            out[d.name] = CategoricalDistribution(list(k.categories or ()))
        elif k.kind == "int":
            out[d.name] = IntDistribution(int(k.low), int(k.high), log=log)
        else:
            out[d.name] = FloatDistribution(float(k.low), float(k.high), log=log)
    return out


def tpe_batch(
    space: SearchSpace,
    seed: int,
    b: int,
    n: int,
    history: Sequence[Evaluation],
    pending: Sequence[Sequence[Any]],
) -> list[list[Any]]:
    """``n`` points from TPE (multivariate, constant liar; Optuna's 10 random start-up trials)."""
    optuna = _optuna()
    from optuna.trial import TrialState, create_trial

    dist = distributions(space)
    names = space.names
    sampler = optuna.samplers.TPESampler(
        seed=derive_seed(seed, "tpe", b), multivariate=True, constant_liar=True
    )
    study = optuna.create_study(sampler=sampler)
    xs, ys = told(history)
    for x, y in zip(xs, ys, strict=True):
        study.add_trial(create_trial(params=dict(zip(names, x, strict=True)), distributions=dist, value=y))
    for x in pending:
        study.add_trial(
            create_trial(
                params=dict(zip(names, x, strict=True)), distributions=dist, state=TrialState.RUNNING
            )
        )
    return [[study.ask(dist).params[name] for name in names] for _ in range(n)]
