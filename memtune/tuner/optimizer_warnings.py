"""Warnings on the optimizer path (scikit-optimize over scikit-learn, scipy and numpy).

scikit-optimize is archived upstream, so a new scikit-learn, scipy or numpy can break it; their
deprecation and future warnings are how such a break announces itself. Nothing here silences them:
only warnings that are understood and harmless for memtune are filtered, each by category, message
and module, and tests/test_tuner_warnings.py fails on any deprecation or future warning that is
left on the optimizer path.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


def known_warnings() -> list[tuple[str, type[Warning], str]]:
    """(message regex, category, module regex) of each understood warning, with the reason."""
    from sklearn.exceptions import ConvergenceWarning

    return [
        # skopt's GaussianProcessRegressor sets the fitted WhiteKernel's noise_level to 0 so that
        # predictions are noise-free (skopt/learning/gaussian_process/gpr.py); sklearn's
        # Kernel.theta then takes log(0) = -inf for that fixed-at-zero term, which is never optimised
        (r"divide by zero encountered in log", RuntimeWarning, r"sklearn\.gaussian_process\.kernels"),
        # a GP length scale at its bound: the objective barely varies along that knob, which the
        # model then treats as flat; nothing to do about it per fit
        (r"The optimal value found for dimension", ConvergenceWarning, r"sklearn\.gaussian_process"),
        # the constant liar may tell a point the model was told before (a repeated proposal)
        (r"The objective has been evaluated at", UserWarning, r"skopt"),
    ]


@contextmanager
def known_optimizer_warnings() -> Iterator[None]:
    """Ignore the understood warnings of :func:`known_warnings` (and only those) around the optimizer."""
    with warnings.catch_warnings():
        for message, category, module in known_warnings():
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield
