"""How the model-guided points are chosen among candidates: local moves around the best points
(trust regions of several sizes), the constant-liar batch, and the scale the model sees.

The rules and their measurements are in docs/tuner.md ("Optimizer, batches and determinism").
Every draw comes from the optimizer's own random state, so the points stay a function of the
seed and the history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# random candidates the acquisition is evaluated on (skopt default 10000), and extra L-BFGS starts
# of the GP hyperparameter fit (skopt default 2): 2000 and 0 instead of 5000 and 2 halved the
# optimizer's CPU (15.3 -> 8.2 s in a 50-evaluation `small` run) with the ratios still on target
ACQ_SAMPLES = 2000
GP_RESTARTS = 0
# points refused by admission control asked again per batch point (each re-ask is one tell: a
# Cholesky factorisation and an acquisition sweep)
REASKS = 8


def model_scale(ys: list[float]) -> list[float]:
    """What the surrogate model sees: ``log(y + c)`` with ``c`` = 1 % of the median |y| (plus a
    tiny floor). Stall and latency objectives span decades between good and bad points (0.008 to
    0.5 on `small`); on a log scale the model resolves the region near the optimum instead of
    spending itself on the bad points. Monotone, so the order of points (and the best) is kept."""
    arr = np.asarray(ys, dtype=np.float64)
    c = 0.01 * float(np.median(np.abs(arr))) + 1e-12
    return [float(v) for v in np.log(np.maximum(arr, 0.0) + c)]


def constant_liar(opt: Any, n: int, lie: float, before: Callable[[int], None] | None = None,
                  pending: list[list[Any]] | None = None,
                  feasible: Callable[[list[Any]], bool] | None = None, bad: float = 0.0,
                  tries: int = REASKS) -> list[list[Any]]:
    """``n`` points from a fitted skopt ``Optimizer`` by the constant liar (CL-min): after each point
    the model is told ``lie`` there, so the next point goes elsewhere.

    skopt's ``ask(n_points)`` refits the GP with its hyperparameters re-optimised for the copy it
    makes and for every lie (6 L-BFGS fits for a batch of 4, ~70 % of the tuner's own time on
    `small`). A lie is a what-if, not data: here the lies reuse the kernel learned from the real
    evaluations, so each costs one Cholesky factorisation.

    ``pending`` points (asked earlier, still being simulated) are told ``lie`` first, the same way.

    ``before(k)``, when given, is called before the tell that chooses point ``k`` > 0 (the caller
    does it for point 0, which the first tell chooses unless there are pending points).

    A point ``feasible`` refuses (validation or admission control: known without simulating) is
    told ``bad`` and another asked in its place, up to ``tries`` times per point, so the budget
    goes to points that run: on `db` 4 of 40 evaluations had asked more reservation than the
    host admits.
    """
    model = opt.models[-1] if opt.models else None
    if (n > 1 or pending) and model is not None and hasattr(model, "kernel_"):
        opt.base_estimator_ = _fixed_kernel_gp(model)
    if pending:
        opt.tell([list(p) for p in pending], [lie] * len(pending))
    pts = [_ask_feasible(opt, feasible, bad, tries)]
    for k in range(1, n):
        if before is not None:
            before(k)
        opt.tell(pts[-1], lie)
        pts.append(_ask_feasible(opt, feasible, bad, tries))
    return pts


def _ask_feasible(opt: Any, feasible: Callable[[list[Any]], bool] | None, bad: float,
                  tries: int) -> list[Any]:
    """``opt.ask()``, with points ``feasible`` refuses told ``bad`` and asked again (the last one
    is kept when every try is refused)."""
    x = list(opt.ask())
    for _ in range(tries if feasible is not None else 0):
        if feasible(x):
            break
        opt.tell(x, bad)
        x = list(opt.ask())
    return x




class LocalCandidates:
    """Replaces ``space.rvs`` (the candidates skopt minimises the acquisition over) so that a
    ``share`` of its samples are *local moves*: one of ``centres`` (the best points told so far)
    with knob blocks changed (each with probability ``changes`` / blocks, at least one), the rest
    uniform over the space as before.

    Expected improvement over uniform candidates alone favours points far from every evaluation;
    local moves let the model refine a good point a few blocks at a time, in the spirit of
    trust-region BO (TuRBO, Eriksson et al., NeurIPS 2019). A ``step_share`` of the moves *step*
    each changed numeric knob from the centre by a normal step of ``step`` x 1, 2, 4 ...
    (``step_scales`` sizes) times its range; a categorical knob of a stepped block is redrawn with
    probability ``flip_per_step`` x the step, else kept; the other moves redraw from the priors.
    ``block_share`` of the moves change whole ``blocks``, the rest single knobs.
    """

    def __init__(self, space: Any, centres: list[list[Any]], share: float, changes: float,
                 blocks: list[list[int]] | None = None, block_share: float = 1.0,
                 step: float = 0.0, step_share: float = 0.0, step_scales: int = 1,
                 flip_per_step: float = 0.0, bound_jump: float = 0.0) -> None:
        from skopt.space import Categorical

        self.bound_jump = bound_jump
        self.extra: list[list[Any]] = []        # structured candidates (block_corners, crossovers)
        self.structured = False
        self.centres = centres
        self.share = share if centres else 0.0
        self.changes, self.step, self.step_share = changes, step, step_share
        self.step_scales, self.flip_per_step = step_scales, flip_per_step
        self.uniform = space.rvs
        self.d = d = space.n_dims
        self.dims = space.dimensions
        self.numeric = np.array([not isinstance(dim, Categorical) for dim in self.dims])
        singles = [[j] for j in range(d)]
        self.kinds = [(blocks or singles, block_share if blocks else 1.0),
                      (singles, 1.0 - block_share if blocks else 0.0)]
        self.members = []
        for bl, _ in self.kinds:
            m = np.zeros((len(bl), d), dtype=np.int64)
            for b, idx in enumerate(bl):
                m[b, idx] = 1
            self.members.append(m)
        space.rvs = self.rvs

    def set_share(self, value: float, structured: bool = False) -> None:
        """The share of local moves in the following draws; with ``structured``, the draws are the
        ``extra`` candidates only (when there are any)."""
        self.share = value if self.centres else 0.0
        self.structured = structured and bool(self.extra)

    def _moves(self, rng: Any, n: int, k: int) -> np.ndarray:
        """Which knobs ``n`` local moves change, by blocks of kind ``k``."""
        m = self.members[k]
        pick = rng.random_sample((n, m.shape[0])) < min(1.0, self.changes / m.shape[0])
        none = ~pick.any(axis=1)
        pick[none, rng.randint(m.shape[0], size=int(none.sum()))] = True
        return (pick.astype(np.int64) @ m) > 0

    def rvs(self, n_samples: int = 1, random_state: Any = None) -> list[list[Any]]:
        from sklearn.utils import check_random_state

        rng = check_random_state(random_state)
        if self.structured and n_samples > 1:
            return [list(x) for x in self.extra]
        rows = self.uniform(n_samples=n_samples, random_state=rng)
        n_local = int(round(self.share * n_samples)) if n_samples > 1 else 0
        if n_local:
            rows[:n_local] = self._local(rng, rows[:n_local], n_local)
            extra = self.extra[: n_local // 2]
            if extra:
                rows[n_local - len(extra):n_local] = [list(x) for x in extra]
        return rows

    def _local(self, rng: Any, drawn_rows: list[list[Any]], n_local: int) -> list[list[Any]]:
        """``n_local`` local moves; ``drawn_rows`` are uniform draws, the values of redrawn knobs."""
        d, numeric = self.d, self.numeric
        which = rng.randint(len(self.centres), size=n_local)
        n_block = int(round(self.kinds[0][1] * n_local))
        change = np.vstack([self._moves(rng, n_block, 0), self._moves(rng, n_local - n_block, 1)])
        stepped = (rng.random_sample(n_local) < self.step_share if self.step > 0
                   else np.zeros(n_local, dtype=bool))
        scale = self.step * 2.0 ** rng.randint(max(1, self.step_scales), size=n_local)
        noise = rng.standard_normal((n_local, d)) * scale[:, None]
        flip = rng.random_sample((n_local, d)) < np.minimum(1.0, self.flip_per_step * scale)[:, None]
        cen = np.empty((len(self.centres), d), dtype=object)
        cen[:] = self.centres
        cen = cen[which]
        drawn = np.empty((n_local, d), dtype=object)
        drawn[:] = drawn_rows
        # steps: rows that change some numeric knob; their changed numeric knobs step, the rest
        # (categorical ones included) keep the centre's values
        stepped &= (change & numeric).any(axis=1)
        jump = rng.random_sample((n_local, d)) < self.bound_jump if self.bound_jump > 0 else None
        for j in np.flatnonzero(numeric):
            sel = stepped & change[:, j]
            if sel.any():
                z = noise[sel, j]
                if jump is not None:   # to the bound the step points to: beyond it, then clipped
                    z = np.where(jump[sel, j], np.sign(z) * 2.0, z)
                drawn[sel, j] = _step(self.dims[j], cen[sel, j].astype(np.float64), z)
        keep = ~change | (stepped[:, None] & ~numeric[None, :] & ~flip)
        drawn[keep] = cen[keep]
        return drawn.tolist()


def local_candidates(space: Any, centres: list[list[Any]], share: float, changes: float,
                     blocks: list[list[int]] | None = None, block_share: float = 1.0,
                     step: float = 0.0, step_share: float = 0.0, step_scales: int = 1,
                     flip_per_step: float = 0.0, bound_jump: float = 0.0,
                     extra: list[list[Any]] | None = None) -> Callable[..., None]:
    """Install :class:`LocalCandidates` as ``space.rvs``; returns the function that sets the share
    of local moves for the following draws. ``extra`` candidates are among the local ones of every
    draw (up to half of them)."""
    lc = LocalCandidates(space, centres, share, changes, blocks, block_share, step, step_share,
                         step_scales, flip_per_step, bound_jump)
    lc.extra = list(extra or [])
    return lc.set_share


def block_corners(dims: list[Any], blocks: list[list[int]], centre: list[Any],
                  limit: int = 64) -> list[list[Any]]:
    """``centre`` with one knob block moved towards a corner: its numeric knobs each at the low
    bound, kept, or at the high bound, its categorical knobs at each of their values (at most
    ``limit`` per block).

    Two-level screening designs put factors at their bounds (Plackett & Burman, Biometrika 1946):
    many knobs act monotonically (a faster sharing scan, a larger reservation), so their best value
    is a bound that local steps reach late, and on `db` only the corner of the sharing block
    (salting across VMs, the shortest scan time, the highest rate cap) pays."""
    import itertools

    from skopt.space import Categorical

    out: list[list[Any]] = []
    for idx in blocks:
        levels = [list(dims[j].categories) if isinstance(dims[j], Categorical)
                  else [dims[j].low, centre[j], dims[j].high] for j in idx]
        for combo in itertools.islice(itertools.product(*levels), limit):
            x = list(centre)
            for j, v in zip(idx, combo, strict=True):
                x[j] = v
            if x != centre and x not in out:
                out.append(x)
    return out


def crossovers(blocks: list[list[int]], centres: list[list[Any]], donors: list[list[Any]]) -> list[list[Any]]:
    """Each centre with one knob block copied from a donor (another good point) where they differ:
    knobs of different blocks act mostly through their own mechanism, so the best block values of
    two points may add up (a sharing block found on one point, a reservation block on another)."""
    out: list[list[Any]] = []
    for c in centres:
        for d in donors:
            for idx in blocks:
                if any(c[j] != d[j] for j in idx):
                    x = list(c)
                    for j in idx:
                        x[j] = d[j]
                    if x not in out and x not in centres:
                        out.append(x)
    return out


def _step(dim: Any, values: np.ndarray, z: np.ndarray) -> list[Any]:
    """``values`` of skopt dimension ``dim`` moved by ``z`` times its range (log scale for
    log-uniform priors), clipped to the range; integers rounded."""
    from skopt.space import Integer

    lo, hi = float(dim.low), float(dim.high)
    log = getattr(dim, "prior", "uniform") == "log-uniform"
    f: Callable[[Any], Any] = np.log if log else np.asarray
    a, b = float(f(lo)), float(f(hi))
    v = np.clip(f(values) + z * (b - a), a, b)
    v = np.clip(np.exp(v) if log else v, lo, hi)
    if isinstance(dim, Integer):
        return [int(x) for x in np.rint(v)]
    return [float(x) for x in v]


def _fixed_kernel_gp(model: Any) -> Any:
    """A GP with ``model``'s learned kernel and noise level, and no hyperparameter search."""
    from sklearn.base import clone
    from skopt.learning.gaussian_process.kernels import WhiteKernel

    kernel = model.kernel_.clone_with_theta(model.kernel_.theta)
    if getattr(model, "noise_", None) is not None:
        white = [k for k, v in kernel.get_params().items() if isinstance(v, WhiteKernel)]
        kernel.set_params(**{white[0]: WhiteKernel(noise_level=model.noise_, noise_level_bounds="fixed")})
    est = clone(model)
    est.set_params(kernel=kernel, optimizer=None)
    return est


