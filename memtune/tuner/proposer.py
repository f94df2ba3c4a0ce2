"""Which points to evaluate next: the initial design, then model-guided batches.

A :class:`Proposer` knows the run's configuration and space, and is handed the history (told
evaluations, in ask order) and the pending points (asked, not yet told) as data. Batch ``b`` is a
function of the run seed, that history and those points only: the design is one Latin hypercube
drawn from the run seed; after it, batch ``b`` comes from a *fresh* scikit-optimize ``Optimizer``
seeded with (run seed, b) and told every evaluation in ask order. So a resumed or distributed run
asks the same points as one that ran in one go.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from memtune.tuner.candidates import (
    ACQ_SAMPLES,
    GP_RESTARTS,
    block_corners,
    constant_liar,
    crossovers,
    local_candidates,
    model_scale,
)
from memtune.tuner.config import TuneConfig
from memtune.tuner.defaults import default
from memtune.tuner.design import initial_design, screening
from memtune.tuner.evaluate import derive_seed
from memtune.tuner.history import Evaluation, told
from memtune.tuner.optimizer_warnings import known_optimizer_warnings
from memtune.tuner.space import SearchSpace


class Proposer:
    """Proposes the points of each batch for one run.

    ``baseline`` is the ``esxi-default`` policy as a point (None when the space cannot express
    it), ``presets`` the other shipped presets as points (see :mod:`memtune.tuner.mapping`);
    ``feasible`` says whether a point passes validation and admission control."""

    def __init__(self, config: TuneConfig, space: SearchSpace, baseline: list[Any] | None,
                 presets: list[list[Any]], feasible: Callable[[list[Any]], bool] | None = None) -> None:
        self.config = config
        self.feasible = feasible    # model-guided points it refuses are not asked (not simulated)
        self.space = space
        self.baseline = baseline
        self.presets = presets
        self.dims = space.skopt_dimensions()

    def propose(self, b: int, n: int, history: Sequence[Evaluation],
                pending: Sequence[Sequence[Any]] = ()) -> list[list[Any]]:
        """The ``n`` points of batch ``b``."""
        c = self.config
        pending = [list(p) for p in pending]
        if c.optimizer == "random":
            from skopt.space import Space

            pts = Space(self.dims).rvs(n_samples=n, random_state=derive_seed(c.seed, "random", b))
            base = self.baseline if b == 0 else None
            return [base, *pts[1:]] if base is not None else pts
        asked = len(history) + len(pending)
        if c.optimizer == "tpe":
            return self._tpe(b, n, history, pending, asked)
        if asked < c.n_initial or not history:
            # the initial design; a model batch asked before anything is told (--initial-points
            # of one batch) continues it with screening points of its own
            pts = [list(p) for p in self.design()[asked:asked + n]]
            if len(pts) < n:
                pts += self.screening(n - len(pts), ("fill", b), ("fill-keep", b))
            return pts
        return self._model_batch(b, n, history, pending, asked - c.n_initial)

    # --- the initial design -------------------------------------------------------------------

    def design(self) -> list[list[Any]]:
        """The initial design (:func:`memtune.tuner.design.initial_design`): the baseline point,
        the other presets and their blocks combined (``tuner.design_presets``), then a screening
        Latin hypercube around the baseline."""
        return initial_design(self.dims, self.space.blocks(), self.baseline, self._design_presets(),
                              self.config.seed, self.config.n_initial)

    def screening(self, k: int, design_key: tuple[Any, ...], keep_key: tuple[Any, ...]) -> list[list[Any]]:
        """``k`` screening points (see :func:`memtune.tuner.design.screening`)."""
        return screening(self.dims, self.space.blocks(), self.baseline, self._design_presets(),
                         self.config.seed, k, design_key, keep_key)

    def _design_presets(self) -> list[list[Any]]:
        return self.presets if self.baseline is not None and self.config.design_presets else []

    def _tpe(self, b: int, n: int, history: Sequence[Evaluation], pending: list[list[Any]],
             asked: int) -> list[list[Any]]:
        """TPE's points; with presets in the design, the baseline and the presets come first."""
        from memtune.tuner.tpe import tpe_batch

        head = [self.baseline, *self.presets] if self.config.design_presets and self.baseline else []
        pts = [list(p) for p in head[asked:asked + n]]
        if len(pts) < n:
            pts += tpe_batch(self.space, self.config.seed, b, n - len(pts), history, [*pending, *pts])
        return pts

    # --- model-guided batches ------------------------------------------------------------------

    def _optimizer(self, b: int) -> Any:
        """A fresh skopt ``Optimizer`` for batch ``b``, seeded with (run seed, b)."""
        from skopt import Optimizer
        from skopt.space import Space
        from skopt.utils import cook_estimator

        c = self.config
        rs = derive_seed(c.seed, "optimizer", b)
        if c.optimizer == "gp":
            est = cook_estimator("GP", space=Space(self.dims), random_state=rs, noise="gaussian",
                                 n_restarts_optimizer=GP_RESTARTS)
        else:
            est = cook_estimator("ET", random_state=rs, n_estimators=100, min_samples_leaf=3)
        # EI with the acquisition minimised over random samples: gp_hedge + L-BFGS costs ~5x the
        # time (measured: ~9 s per batch of 4 on the 2-core reference) for no gain we could see
        return Optimizer(self.dims, base_estimator=est, n_initial_points=0, acq_func="EI",
                         acq_optimizer="sampling", acq_optimizer_kwargs={"n_points": ACQ_SAMPLES},
                         random_state=rs)

    def _structured(self, centres: list[list[Any]], donors: list[list[Any]],
                    history: Sequence[Evaluation]) -> list[list[Any]]:
        """Candidates beside the random local moves: the best point with one block at a corner
        (``tuner.corners``; not at a bound :meth:`_bad_bounds` rules out), the centres with one
        block of another good point (``tuner.donors``)."""
        out: list[list[Any]] = []
        if centres and default("tuner.corners"):
            bad = self._bad_bounds(history)
            fields = [d.field for d in self.space.dimensions]
            out += [x for x in block_corners(self.dims, self.space.blocks(), centres[0])
                    if not any((fields[j], v) in bad and x[j] != centres[0][j] for j, v in enumerate(x))]
        if default("tuner.donors") > 1:
            out += [x for x in crossovers(self.space.blocks(), centres, donors) if x not in out]
        return out

    def _bad_bounds(self, history: Sequence[Evaluation]) -> set[tuple[str, Any]]:
        """(field, bound) pairs every simulated point holding them ended above ``tuner.stop_factor``
        x the best value: a per-VM field (``limit``) acts alike in every group, so once `oltp`'s
        limit at its low bound thrashed, `report`'s is not tried there as a corner."""
        ok = [e for e in history if e.ok]
        if not ok:
            return set()
        cut = default("tuner.stop_factor") * min(e.value for e in ok)
        seen: dict[tuple[str, Any], bool] = {}
        for e in ok:
            for d, dim, v in zip(self.space.dimensions, self.dims, e.x, strict=True):
                if hasattr(dim, "low") and v in (dim.low, dim.high):
                    key = (d.field, v)
                    seen[key] = seen.get(key, True) and e.value > cut
        return {k for k, bad in seen.items() if bad}

    def _model_batch(self, b: int, n: int, history: Sequence[Evaluation], pending: list[list[Any]],
                     first: int) -> list[list[Any]]:
        """``n`` points chosen by the surrogate among local candidates (``first``: model-guided
        points asked before this batch)."""
        opt = self._optimizer(b)
        xs, ys = told(history)
        ys = model_scale(ys)
        feasible = sorted((e.value, e.index) for e in history if e.ok)
        by_index = {e.index: e for e in history}
        centres = [list(by_index[i].x) for _, i in feasible[:default("tuner.local_centres")]]
        donors = [list(by_index[i].x) for _, i in feasible[:default("tuner.donors")]]
        extra = self._structured(centres, donors, history)
        set_share = local_candidates(opt.space, centres, default("tuner.local_share"),
                                     default("tuner.local_changes"), self.space.blocks(),
                                     default("tuner.block_moves"), default("tuner.local_step"),
                                     default("tuner.step_share"), default("tuner.step_scales"),
                                     default("tuner.step_flip"), default("tuner.bound_jump"), extra)
        every = default("tuner.global_every")

        structured = n - default("tuner.structured_per_batch")

        def before(k: int) -> None:         # every `every`-th model-guided point: uniform candidates
            glob = every > 0 and (first + k) % every == every - 1
            set_share(0.0 if glob else default("tuner.local_share"), structured=k >= structured)

        from threadpoolctl import threadpool_limits

        # one BLAS thread: the GP's small matrices gain nothing from more, and on a busy 2-core host
        # oversubscribed BLAS threads made each batch ~4x slower (measured 18 s vs 4.7 s)
        with known_optimizer_warnings(), threadpool_limits(1):
            before(0)
            opt.tell(xs, ys)
            bad = max(ys) + default("tuner.penalty_margin") * (max(ys) - min(ys))
            return constant_liar(opt, n, min(ys), before, pending, self.feasible, bad)
