"""The optimizer loop: ask a batch, reject invalid points, simulate the rest, journal, tell.

Determinism. The points of batch ``b`` are a function of the run seed and the evaluations told
before it, nothing else: the initial design is one Latin hypercube drawn from the run seed; after
it, batch ``b`` comes from a *fresh* scikit-optimize ``Optimizer`` seeded with (run seed, b) and
told every earlier evaluation in ask order. The batch size is fixed (not the worker count), the
seeds of every evaluation are the same, derived from (run seed, repeat), and results are told in ask
order however they complete. So a run gives the same numbers with 1, 2 or 8 workers, on Dask or
locally, and a resumed run the same as one never interrupted: replaying the journal *is* telling
a fresh optimizer what the killed one knew.

Infeasible points (the policy fails validation or admission control) are never simulated; they
are journaled as infeasible and told the penalty ``worst + margin * (worst - best)`` of the
feasible values known at that time (at least 10 % of ``|worst|`` above ``worst``;
``tuner.no_feasible_penalty`` while none is known), i.e. worse than every feasible point.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from memtune.core.host import page_scale_of
from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import Scenario
from memtune.errors import ConfigError, UserError
from memtune.policies import Percent, Policy, VMRule, apply_policy, list_presets, load_policy
from memtune.tuner.defaults import default
from memtune.tuner.evaluate import EvalTask, derive_seed, eval_seeds, report_seeds
from memtune.tuner.executors import Executor, SerialExecutor
from memtune.tuner.journal import Journal, JournalState, read_journal
from memtune.tuner.objective import Objective
from memtune.tuner.optimizer_warnings import known_optimizer_warnings
from memtune.tuner.space import FRACTION_FIELDS, SearchSpace, build_space

OPTIMIZERS = ("gp", "forest", "random")
BASELINE = "esxi-default"
JOURNAL = "journal.jsonl"
FIDELITIES = ("coarse", "full")
# random candidates the acquisition is evaluated on (skopt default 10000), and extra L-BFGS starts
# of the GP hyperparameter fit (skopt default 2): 2000 and 0 instead of 5000 and 2 halved the
# optimizer's CPU (15.3 -> 8.2 s in a 50-evaluation `small` run; 69.8 -> 66.4 s wall) with the
# ratios still on target (small 0.31 -> 0.30, db 0.43 -> 0.45, GP@40 share 1.97 -> 1.30)
ACQ_SAMPLES = 2000
# batches asked ahead of the history: batch b is asked once batches <= b - 1 - LAG are told (the
# optimizer works while the workers simulate; see Tuner.run)
LAG = 1
GP_RESTARTS = 0


@dataclass
class TuneConfig:
    """Everything that decides a tuning run's results (and a few things that do not)."""

    scenario: Scenario
    seed: int | None = None                 # None: the scenario's seed
    budget: int = field(default_factory=lambda: default("tuner.budget"))
    batch: int = field(default_factory=lambda: default("tuner.batch"))
    repeats: int = field(default_factory=lambda: default("tuner.repeats"))
    initial_points: int = field(default_factory=lambda: default("tuner.initial_points"))
    duration: float | None = None           # simulated seconds per run; None: the scenario's
    fidelity: str = field(default_factory=lambda: default("tuner.fidelity"))
    optimizer: str = "gp"
    objective: Objective = field(default_factory=Objective)
    group: str = "prefix"
    knobs: tuple[str, ...] = ()
    fix: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    # stopping rules and reporting (do not change the points a run visits)
    patience: int | None = None
    time_limit: float | None = None
    presets: tuple[str, ...] | None = None  # compared in the report; None: every preset

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}", field="--optimizer")
        if self.fidelity not in FIDELITIES:
            raise UserError(f"expected one of {', '.join(FIDELITIES)}, got {self.fidelity!r}", field="--fidelity")
        for name, flag in (("budget", "--budget"), ("batch", "--batch"), ("repeats", "--repeats"),
                           ("initial_points", "--initial-points")):
            if getattr(self, name) < 1:
                raise UserError("must be at least 1", field=flag)
        if self.patience is not None and self.patience < 1:
            raise UserError("must be at least 1", field="--patience")
        if self.time_limit is not None and not self.time_limit > 0:
            raise UserError("must be greater than zero", field="--time-limit")
        if self.duration is not None and not self.duration > 0:
            raise UserError("must be greater than zero", field="--duration")
        if self.seed is None:
            self.seed = self.scenario.seed

    @property
    def n_initial(self) -> int:
        """Initial design size, rounded up to whole batches."""
        return int(math.ceil(self.initial_points / self.batch) * self.batch)


@dataclass
class Evaluation:
    """One told point."""

    index: int
    batch: int
    x: list[Any]
    assignment: dict[str, Any]
    feasible: bool
    value: float | None = None
    metrics: dict[str, Any] | None = None
    reason: str | None = None
    seeds: tuple[int, ...] = ()
    elapsed: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"type": "eval", "index": self.index, "batch": self.batch, "x": self.x,
                "point": self.assignment, "feasible": self.feasible, "value": self.value,
                "reason": self.reason, "seeds": list(self.seeds), "elapsed": round(self.elapsed, 4),
                "metrics": self.metrics}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Evaluation:
        return cls(index=int(rec["index"]), batch=int(rec["batch"]), x=list(rec["x"]),
                   assignment=dict(rec["point"]), feasible=bool(rec["feasible"]), value=rec.get("value"),
                   metrics=rec.get("metrics"), reason=rec.get("reason"), seeds=tuple(rec.get("seeds", ())),
                   elapsed=float(rec.get("elapsed", 0.0)))


@dataclass
class _Batch:
    """A batch asked and not yet told: its points, finished results and running evaluations."""

    b: int
    first: int
    points: list[list[Any]]
    results: dict[int, Evaluation] = field(default_factory=dict)
    running: dict[int, Evaluation] = field(default_factory=dict)


@dataclass
class _Comparison:
    """The report's simulations: one entry per compared policy (preset, scenario, best), on the
    run's report seeds, and the names whose results have not come back yet."""

    seeds: tuple[int, ...]
    entries: dict[str, dict[str, Any]]
    waiting: set[str]


def eval_scenario(scenario: Scenario, duration: float | None) -> Scenario:
    """``scenario`` with the simulated time of one evaluation: ``duration`` if given (a warm-up
    as long or longer is cut to a third of it), else the scenario's own (scenarios put their
    pressure late: `small`'s batch phases start at 10 and 20 minutes, and cutting it to 15 minutes
    leaves a stall fraction of 0.1 % that no policy changes)."""
    if duration is None:
        duration = scenario.duration
    warmup = scenario.warmup if scenario.warmup < duration else duration / 3
    duration = max(scenario.tick, round(duration / scenario.tick) * scenario.tick)
    return scenario.replace(duration=float(duration), warmup=float(warmup))


def coarse_scenario(scenario: Scenario) -> Scenario:
    """``scenario`` simulated at a coarser resolution for the search: simulated pages
    ``tuner.coarse_factor`` times as large (same ticks, duration, warm-up, workloads and seeds).

    Measured on 17 points of a `small` run: about 20 % less CPU per evaluation, Spearman rank
    correlation of the objective with the full resolution 0.997. Longer ticks would save more but
    blur short transients: on `vdi` the boot storm's 5-second low state, and with it the whole
    effect of ``Mem.MemMinFreePct``, disappears at 10-second ticks. The optimizer only needs the
    order of points right; the report simulates the best point, the baseline and the presets again
    at full resolution."""
    f = int(default("tuner.coarse_factor"))
    if f <= 1:
        return scenario
    return scenario.replace(host=replace(scenario.host, page_scale=page_scale_of(scenario) * f))


def assignment_to_policy(space: SearchSpace, assignment: dict[str, Any], name: str,
                         description: str = "") -> Policy:
    """The policy a point stands for: host settings, and one rule per VM group (a ``<group>-*``
    pattern when it selects exactly the group's VMs, else one rule per VM)."""
    settings = {k: v for k, v in assignment.items() if k in space.registry}
    per_group = space.group_values(assignment)
    mem = {vm.name: vm.memory for vm in space.scenario.vms}
    all_names = list(mem)
    rules: list[VMRule] = []
    for group, members in space.groups.items():
        knobs = per_group.get(group)
        if not knobs:
            continue
        pattern = f"{group}-*"
        use_pattern = (len(members) > 1 and len({mem[m] for m in members}) == 1
                       and sorted(fnmatch.filter(all_names, pattern)) == sorted(members))
        targets = [pattern] if use_pattern else list(members)
        for target in targets:
            values: dict[str, Any] = {}
            for fld, v in knobs.items():
                if fld in FRACTION_FIELDS:
                    values[fld] = Percent(round(float(v) * 100, 2))
                elif fld == "shares":
                    mb = max(1, mem[members[0] if use_pattern else target] // 2**20)
                    values[fld] = max(1, int(round(float(v) * mb)))
            rules.append(VMRule(target, **values))
    return Policy(name=name, description=description, settings=settings, vms=tuple(rules),
                  source=f"<tuner point {name}>")


def model_scale(ys: list[float]) -> list[float]:
    """What the surrogate model sees: ``log(y + c)`` with ``c`` = 1 % of the median |y| (plus a
    tiny floor). Stall and latency objectives span decades between good and bad points (0.008 to
    0.5 on `small`); on a log scale the model resolves the region near the optimum instead of
    spending itself on the bad points. Monotone, so the order of points (and the best) is kept."""
    arr = np.asarray(ys, dtype=np.float64)
    c = 0.01 * float(np.median(np.abs(arr))) + 1e-12
    return [float(v) for v in np.log(np.maximum(arr, 0.0) + c)]


def constant_liar(opt: Any, n: int, lie: float, before: Callable[[int], None] | None = None,
                  pending: list[list[Any]] | None = None) -> list[list[Any]]:
    """``n`` points from a fitted skopt ``Optimizer`` by the constant liar (CL-min): after each point
    the model is told ``lie`` there, so the next point goes elsewhere.

    skopt's ``ask(n_points)`` refits the GP with its hyperparameters re-optimised for the copy it
    makes and for every lie (6 L-BFGS fits for a batch of 4, ~70 % of the tuner's own time on
    `small`). A lie is a what-if, not data: here the lies reuse the kernel learned from the real
    evaluations, so each costs one Cholesky factorisation.

    ``pending`` points (asked earlier, still being simulated) are told ``lie`` first, the same way.

    ``before(k)``, when given, is called before the tell that chooses point ``k`` > 0 (the caller
    does it for point 0, which the first tell chooses unless there are pending points).
    """
    model = opt.models[-1] if opt.models else None
    if (n > 1 or pending) and model is not None and hasattr(model, "kernel_"):
        opt.base_estimator_ = _fixed_kernel_gp(model)
    if pending:
        opt.tell([list(p) for p in pending], [lie] * len(pending))
    pts = [list(opt.ask())]
    for k in range(1, n):
        if before is not None:
            before(k)
        opt.tell(pts[-1], lie)
        pts.append(list(opt.ask()))
    return pts


def local_candidates(space: Any, centres: list[list[Any]], share: float, changes: float,
                     blocks: list[list[int]] | None = None, block_share: float = 1.0,
                     step: float = 0.0, step_share: float = 0.0, step_scales: int = 1,
                     flip_per_step: float = 0.0) -> Callable[[float], None]:
    """Make ``space.rvs`` (the candidates skopt minimises the acquisition over) draw a ``share`` of
    its samples as *local moves*: one of ``centres`` (the best points told so far) with each knob
    redrawn from its prior with probability ``changes / d`` (at least one knob), the rest
    uniformly over the space as before.

    Expected improvement over uniform candidates alone favours points far from every evaluation,
    where the GP's variance is largest: in the 17 dimensions of `db`, 25 of the 28 model-guided
    points of a 40-point run changed most knobs at once, several to harmful values (a limit of 0.3),
    and none followed up the points that had helped. Local moves let the model refine a good
    point a few knobs at a time, in the spirit of trust-region BO (TuRBO, Eriksson et al.,
    NeurIPS 2019, which perturbs ~20/d of the coordinates of the incumbent). Draws come from the
    optimizer's own random state, so the points stay a function of the seed and the history.

    A ``step_share`` of the local moves *step* instead of redrawing: each numeric knob they change
    moves from the centre's value by a normal step of ``step`` times its range (on the log scale
    for log-uniform knobs), categorical knobs keep the centre's value (a move that would change
    only categorical knobs, such as a block of one switch, redraws them). Redrawn blocks find which
    mechanism helps; steps refine inside it (on `db`, the TPS block is found with a redraw, but
    the scan time and rate cap that make it pay are narrow, and a reservation of 0.9 of the limit
    for `report` is a small corner of a uniform redraw of its block).

    Returns a function that sets the share for the following draws.
    """
    from sklearn.utils import check_random_state
    from skopt.space import Categorical

    state = {"share": share if centres else 0.0}

    def set_share(value: float) -> None:
        state["share"] = value if centres else 0.0

    uniform = space.rvs
    d = space.n_dims
    dims = space.dimensions
    numeric = np.array([not isinstance(dim, Categorical) for dim in dims])
    singles = [[j] for j in range(d)]
    kinds = [(blocks or singles, block_share if blocks else 1.0), (singles, 1.0 - block_share if blocks else 0.0)]
    members = []
    for bl, _ in kinds:
        m = np.zeros((len(bl), d), dtype=np.int64)
        for b, idx in enumerate(bl):
            m[b, idx] = 1
        members.append(m)

    def moves(rng: Any, n: int, k: int) -> np.ndarray:
        """Which knobs ``n`` local moves redraw, by blocks of kind ``k``."""
        m = members[k]
        pick = rng.random_sample((n, m.shape[0])) < min(1.0, changes / m.shape[0])
        none = ~pick.any(axis=1)
        pick[none, rng.randint(m.shape[0], size=int(none.sum()))] = True
        return (pick.astype(np.int64) @ m) > 0

    def rvs(n_samples: int = 1, random_state: Any = None) -> list[list[Any]]:
        rng = check_random_state(random_state)
        rows = uniform(n_samples=n_samples, random_state=rng)
        n_local = int(round(state["share"] * n_samples)) if n_samples > 1 else 0
        if n_local == 0:
            return rows
        which = rng.randint(len(centres), size=n_local)
        n_block = int(round(kinds[0][1] * n_local))
        change = np.vstack([moves(rng, n_block, 0), moves(rng, n_local - n_block, 1)])
        stepped = rng.random_sample(n_local) < step_share if step > 0 else np.zeros(n_local, dtype=bool)
        scale = step * 2.0 ** rng.randint(max(1, step_scales), size=n_local)
        noise = rng.standard_normal((n_local, d)) * scale[:, None]
        flip = rng.random_sample((n_local, d)) < np.minimum(1.0, flip_per_step * scale)[:, None]
        cen = np.empty((len(centres), d), dtype=object)
        cen[:] = centres
        cen = cen[which]
        drawn = np.empty((n_local, d), dtype=object)
        drawn[:] = rows[:n_local]
        # steps: rows that change some numeric knob; their changed numeric knobs step, the rest
        # (categorical ones included) keep the centre's values
        stepped &= (change & numeric).any(axis=1)
        for j in np.flatnonzero(numeric):
            sel = stepped & change[:, j]
            if sel.any():
                drawn[sel, j] = _step(dims[j], cen[sel, j].astype(np.float64), noise[sel, j])
        keep = ~change | (stepped[:, None] & ~numeric[None, :] & ~flip)
        drawn[keep] = cen[keep]
        rows[:n_local] = drawn.tolist()
        return rows

    space.rvs = rvs
    return set_share


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


class Tuner:
    """A tuning run writing to ``out`` (see :func:`tune` for the one-call form)."""

    def __init__(self, config: TuneConfig, out: Path, *, resume: bool = False,
                 executor: Executor | None = None,
                 on_eval: Callable[[Evaluation, Tuner], None] | None = None,
                 compare_early: bool = False) -> None:
        self.config = c = config
        self.out = Path(out)
        self.executor = executor or SerialExecutor()
        self.on_eval = on_eval
        self.pm = build_plugin_manager(disable=tuple(c.disable) + tuple(c.scenario.disable), modules=c.plugins)
        self.base = eval_scenario(c.scenario, c.duration)      # what the report compares on
        # what evaluations simulate
        self.eval_base = coarse_scenario(self.base) if c.fidelity == "coarse" else self.base
        self.space = build_space(self.base, self.pm, group=c.group, knobs=c.knobs, fix=c.fix)
        self.weights = c.objective.vm_weights(self.base, self.space.groups)
        self.history: list[Evaluation] = []
        self.stop_reason = ""
        self.started = time.monotonic()
        self.sim_seconds = 0.0
        self.sim_cpu_seconds = 0.0
        self.optimizer_seconds = 0.0    # proposing batches (in this process, while workers simulate)
        self.optimizer_cpu_seconds = 0.0
        self._journal_path = self.out / JOURNAL
        # batches asked but not yet told, in ask order (at most LAG + 1); on resume, those the
        # journal holds unfinished
        self._inflight: list[_Batch] = []
        # the report's simulations (start_comparison); with compare_early they are submitted as
        # soon as the loop asks no more batches
        self._comparison: _Comparison | None = None
        self.compare_early = compare_early
        self._prepare(resume)

    # --- set-up and resume ---------------------------------------------------------------------

    def start_record(self) -> dict[str, Any]:
        c = self.config
        return {"type": "start", "version": 1, "scenario": c.scenario.name, "source": c.scenario.source,
                "seed": c.seed, "budget": c.budget, "batch": c.batch, "repeats": c.repeats,
                "initial_points": c.n_initial, "optimizer": c.optimizer, "duration": self.base.duration,
                "fidelity": {"name": c.fidelity, "tick": self.eval_base.tick,
                             "page_scale": self.eval_base.host.page_scale},
                "warmup": self.base.warmup, "objective": c.objective.describe(), "space": self.space.signature(),
                "plugins": self.pm.plugin_names(), "modules": list(c.plugins)}

    _MUST_MATCH = ("scenario", "seed", "batch", "repeats", "initial_points", "optimizer", "duration", "fidelity",
                   "warmup", "objective", "space", "plugins")

    def _prepare(self, resume: bool) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output directory {str(self.out)!r}: {exc.strerror or exc}",
                            field="--out") from None
        path = self._journal_path
        if resume and path.exists():
            state = read_journal(path)
            want = self.start_record()
            for key in self._MUST_MATCH:
                if state.start.get(key) != want[key]:
                    raise ConfigError(f"this run's {key} differs from the journal's; resume with the same "
                                      f"scenario and flags, or use another --out", source=str(path),
                                      field=key)
            self._load(state)
            self.journal = Journal(path, truncate_tail=state.torn_bytes)
            self.journal.write({"type": "resume", "told": len(self.history), "time": time.time()})
            return
        if path.exists() and not resume:
            raise UserError(f"{self.out} already holds a tuning run; use --resume to continue it or "
                            f"another --out", field="--out")
        self.journal = Journal(path)
        self.journal.write({**self.start_record(), "time": time.time()})

    def _load(self, state: JournalState) -> None:
        """Rebuild the history from the journal: whole batches in order; the batches after the
        first one the kill cut short (at most ``LAG + 1`` were in flight) keep their finished
        evaluations and re-run the rest."""
        b = 0
        first = 0
        while b in state.batches:
            rec = state.batches[b]
            points = rec["points"]
            if int(rec["first"]) != first:
                raise ConfigError(f"batch {b} starts at evaluation {rec['first']}, expected {first}",
                                  source=str(self._journal_path))
            done = [state.evals.get(first + i) for i in range(len(points))]
            if all(done) and not self._inflight:
                self.history.extend(Evaluation.from_record(r) for r in done)
            else:
                batch = _Batch(b, first, [list(p) for p in points])
                batch.results = {int(r["index"]): Evaluation.from_record(r) for r in done if r}
                self._inflight.append(batch)
            first += len(points)
            b += 1
        if len(self._inflight) > LAG + 1:
            raise ConfigError(f"{len(self._inflight)} unfinished batches, a run has at most {LAG + 1} "
                              f"in flight", source=str(self._journal_path))

    # --- asking ----------------------------------------------------------------------------------

    def baseline_point(self) -> list[Any] | None:
        """The ``esxi-default`` policy as a point of the space (the first point of every run), or
        None when it is not representable (a categorical value outside the knob's categories)."""
        return self.policy_point(BASELINE)

    def preset_points(self) -> list[list[Any]]:
        """The shipped presets other than ``esxi-default`` as points of the space (settings the
        space has no dimension for are dropped), in preset order, without duplicates of each other
        or of the baseline; presets the scenario cannot admit or the space cannot express are
        left out."""
        seen = [self.baseline_point()]
        out: list[list[Any]] = []
        for name in list_presets():
            if name == BASELINE:
                continue
            x = self.policy_point(name)
            if x is not None and x not in seen:
                seen.append(x)
                out.append(x)
        return out

    def policy_point(self, name: str) -> list[Any] | None:
        """Policy ``name`` (a preset) as a point of the space, each dimension clipped to its knob's
        range; None when the scenario cannot admit it or a categorical value is outside the knob's
        categories."""
        try:
            sc = apply_policy(load_policy(name), self.base, registry=self.space.registry)
        except (UserError, FileNotFoundError):
            return None
        settings = self.space.registry.resolve(sc.settings, source=sc.source)
        by_name = {vm.name: vm for vm in sc.vms}
        x: list[Any] = []
        for d in self.space.dimensions:
            k = d.knob
            if d.group is None:
                v: Any = settings[d.name]
            else:
                vals = []
                for name in self.space.groups[d.group]:
                    vm = by_name[name]
                    if d.field == "reservation":
                        f = vm.reservation / vm.memory
                        if self.space.relative_reservation(d.group):
                            f = vm.reservation / max(vm.effective_limit, 1)
                    elif d.field == "limit":
                        f = vm.effective_limit / vm.memory
                    elif d.field == "shares":
                        f = vm.shares_number / max(1, vm.memory // 2**20)
                    else:
                        cap = vm.maxmemctl if vm.maxmemctl is not None else \
                            vm.memory * settings.get("Mem.CtlMaxPercent", 100) / 100
                        f = min(cap, vm.memory) / vm.memory
                    vals.append(f)
                v = float(np.mean(vals))
            if k.kind == "categorical":
                if v not in (k.categories or ()):
                    return None
                v = next(c for c in (k.categories or ()) if c == v)
            else:
                v = min(max(v, k.low), k.high)
                v = int(round(v)) if k.kind == "int" else float(v)
            x.append(v)
        return x

    def penalty(self) -> float:
        vals = [e.value for e in self.history if e.feasible and e.value is not None]
        if not vals:
            return float(default("tuner.no_feasible_penalty"))
        worst, best = max(vals), min(vals)
        return worst + max(default("tuner.penalty_margin") * (worst - best), 0.1 * abs(worst), 1e-12)

    def told(self) -> tuple[list[list[Any]], list[float]]:
        pen = self.penalty()
        xs = [e.x for e in self.history]
        ys = [e.value if e.feasible and e.value is not None else pen for e in self.history]
        return xs, ys

    def _design(self, dims: list[Any]) -> list[list[Any]]:
        """The initial design: the baseline point, the other presets (``tuner.design_presets``),
        then a Latin hypercube from the run seed in which each knob block keeps its baseline value
        with probability ``tuner.keep_baseline``.

        A screening design around the default: a few knobs at harmful values (a limit below the
        working set) dominate any fully random point and hide the knobs that matter; with half of
        the knobs at their defaults the model sees each knob's effect near a sane policy."""
        c = self.config
        base = self.baseline_point()
        presets = self.preset_points() if base is not None and default("tuner.design_presets") else []
        k = c.n_initial - (base is not None) - len(presets)
        head = [base, *presets] if base is not None else []
        return (head + self._screening(dims, base, k, ("design",), ("keep",)))[:c.n_initial]

    def _screening(self, dims: list[Any], base: list[Any] | None, k: int, design_key: tuple[Any, ...],
                   keep_key: tuple[Any, ...]) -> list[list[Any]]:
        """``k`` Latin-hypercube points drawn from (run seed, ``design_key``), each knob block kept
        at ``base`` with probability ``tuner.keep_baseline`` (drawn from (run seed, ``keep_key``))."""
        from skopt.sampler import Lhs

        c = self.config
        if k <= 0:
            return []
        design = [list(p) for p in Lhs(lhs_type="classic", criterion="maximin", iterations=20).generate(
            dims, k, random_state=derive_seed(c.seed, *design_key))]
        if base is None:
            return design
        rng = np.random.default_rng(derive_seed(c.seed, *keep_key))
        p = default("tuner.keep_baseline")
        if default("tuner.block_moves") > 0:
            blocks = self.space.blocks()
            kb = rng.random((len(design), len(blocks)))
            keep = np.zeros((len(design), len(dims)))
            for b, idx in enumerate(blocks):
                keep[:, idx] = kb[:, [b]]
        else:
            keep = rng.random((len(design), len(dims)))
        return [[base[j] if keep[i, j] < p else v for j, v in enumerate(pt)] for i, pt in enumerate(design)]

    def propose(self, b: int, n: int, pending: list[list[Any]] | None = None) -> list[list[Any]]:
        """The ``n`` points of batch ``b``: a function of the run seed, the history and the
        ``pending`` points (asked, not yet told: the batch in flight) only."""
        c = self.config
        pending = pending or []
        dims = self.space.skopt_dimensions()
        from skopt.space import Space

        space = Space(dims)
        if c.optimizer == "random":
            pts = space.rvs(n_samples=n, random_state=derive_seed(c.seed, "random", b))
            base = self.baseline_point() if b == 0 else None
            return [base, *pts[1:]] if base is not None else pts
        asked = len(self.history) + len(pending)
        if asked < c.n_initial or not self.history:
            # the initial design; a model batch asked before anything is told (--initial-points
            # of one batch) continues it with screening points of its own
            design = self._design(dims)
            pts = [list(p) for p in design[asked:asked + n]]
            if len(pts) < n:
                pts += self._screening(dims, self.baseline_point(), n - len(pts), ("fill", b), ("fill-keep", b))
            return pts
        from skopt import Optimizer
        from skopt.utils import cook_estimator

        rs = derive_seed(c.seed, "optimizer", b)
        if c.optimizer == "gp":
            est = cook_estimator("GP", space=space, random_state=rs, noise="gaussian",
                                 n_restarts_optimizer=GP_RESTARTS)
        else:
            est = cook_estimator("ET", random_state=rs, n_estimators=100, min_samples_leaf=3)
        # EI with the acquisition minimised over random samples: gp_hedge + L-BFGS costs ~5x the
        # time (measured: ~9 s per batch of 4 on the 2-core reference) for no gain we could see
        opt = Optimizer(dims, base_estimator=est, n_initial_points=0, acq_func="EI", acq_optimizer="sampling",
                        acq_optimizer_kwargs={"n_points": ACQ_SAMPLES}, random_state=rs)
        xs, ys = self.told()
        ys = model_scale(ys)
        feasible = sorted((e.value, e.index) for e in self.history if e.feasible and e.value is not None)
        centres = [list(self.history[i].x) for _, i in feasible[:default("tuner.local_centres")]]
        set_share = local_candidates(opt.space, centres, default("tuner.local_share"),
                                     default("tuner.local_changes"), self.space.blocks(),
                                     default("tuner.block_moves"), default("tuner.local_step"),
                                     default("tuner.step_share"), default("tuner.step_scales"),
                                     default("tuner.step_flip"))
        every = default("tuner.global_every")
        first = asked - c.n_initial         # model-guided points asked before this batch

        def before(k: int) -> None:         # every `every`-th model-guided point: uniform candidates
            glob = every > 0 and (first + k) % every == every - 1
            set_share(0.0 if glob else default("tuner.local_share"))

        from threadpoolctl import threadpool_limits

        # one BLAS thread: the GP's small matrices gain nothing from more, and on a busy 2-core host
        # oversubscribed BLAS threads made each batch ~4x slower (measured 18 s vs 4.7 s)
        with known_optimizer_warnings(), threadpool_limits(1):
            before(0)
            opt.tell(xs, ys)
            return constant_liar(opt, n, min(ys), before, pending)

    # --- running ---------------------------------------------------------------------------------

    def _policy_scenario(self, assignment: dict[str, Any], name: str, *,
                         full: bool = False) -> tuple[Policy, Scenario | None, str | None]:
        """The policy of ``assignment`` and the scenario it gives: at the evaluations' resolution,
        or with ``full`` at the scenario's own (for comparisons in the report)."""
        policy = assignment_to_policy(self.space, assignment, name)
        try:
            return policy, apply_policy(policy, self.base if full else self.eval_base,
                                        registry=self.space.registry), None
        except UserError as exc:
            return policy, None, exc.message

    def best(self) -> Evaluation | None:
        feas = [e for e in self.history if e.feasible and e.value is not None]
        return min(feas, key=lambda e: (e.value, e.index)) if feas else None

    def _since_best(self) -> int:
        best = self.best()
        if best is None:
            return len(self.history)
        return sum(1 for e in self.history if e.index > best.index)

    def _should_stop(self) -> bool:
        c = self.config
        if self.asked() >= c.budget:
            self.stop_reason = "budget"
        elif c.patience is not None and self._since_best() >= c.patience:
            self.stop_reason = f"no improvement in {c.patience} evaluations"
        elif c.time_limit is not None and time.monotonic() - self.started >= c.time_limit:
            self.stop_reason = "time limit"
        return bool(self.stop_reason)

    def _next_batch(self) -> int:
        """Number of the batch to ask next: after the last in flight, else after the last told."""
        if self._inflight:
            return self._inflight[-1].b + 1
        return self.history[-1].batch + 1 if self.history else 0

    def asked(self) -> int:
        """Evaluations asked so far: told, and in flight."""
        return len(self.history) + sum(len(bt.points) for bt in self._inflight)

    def run(self) -> list[Evaluation]:
        """Evaluate batches until a stopping rule holds; returns the history.

        Batch ``b`` is asked once every batch up to ``b - 1 - LAG`` is told: with ``LAG`` 1 the
        optimizer proposes batch ``b + 1`` while batch ``b`` is simulated (batch ``b - 1``'s points
        are told to it as pending, with the constant liar's value), and batch ``b + 1``'s tasks queue
        behind ``b``'s, so the workers never wait for the optimizer. What batch ``b`` holds depends
        on the seed, the history of batches ``< b - LAG`` and the points of the batches in between,
        not on timing: a resumed run asks the same points."""
        c = self.config
        for bt in self._inflight:                     # resumed: re-run what had not finished
            self._start_batch(bt)
        asking = True
        while True:
            while asking and len(self._inflight) <= LAG:
                if self._should_stop():
                    asking = False
                    if self.compare_early:
                        self.start_comparison()
                    break
                b = self._next_batch()
                n = min(c.batch, c.budget - self.asked())
                first = self.asked()
                pending = [p for bt in self._inflight for p in bt.points]
                t0, c0 = time.perf_counter(), time.process_time()
                points = self.propose(b, n, pending)
                self.optimizer_seconds += time.perf_counter() - t0
                self.optimizer_cpu_seconds += time.process_time() - c0
                points = [[self.space.dimensions[i].native(v) for i, v in enumerate(p)] for p in points]
                self.journal.write({"type": "batch", "batch": b, "first": first, "points": points})
                bt = _Batch(b, first, points)
                self._inflight.append(bt)
                self._start_batch(bt)
            if not self._inflight:
                break
            self._finish_first()
        self.journal.write({"type": "end", "told": len(self.history), "reason": self.stop_reason,
                            "time": time.time()})
        return self.history

    def _start_batch(self, bt: _Batch) -> None:
        """Journal the infeasible points of ``bt`` (never simulated) and submit the others."""
        c = self.config
        for i, x in enumerate(bt.points):
            idx = bt.first + i
            if idx in bt.results:
                continue
            assignment = self.space.assignment(x)
            _, scenario, problem = self._policy_scenario(assignment, f"point-{idx}")
            ev = Evaluation(idx, bt.b, x, assignment, feasible=scenario is not None, reason=problem)
            if scenario is None:
                self.journal.write(ev.record())
                bt.results[idx] = ev
                self._notify(ev)
                continue
            ev.seeds = eval_seeds(c.seed, idx, c.repeats)
            bt.running[idx] = ev
            self._submit(idx, scenario, ev.seeds)

    def _submit(self, index: int | str, scenario: Scenario, seeds: tuple[int, ...]) -> None:
        """Hand one simulation to the executor, with the run's plugin selection."""
        c = self.config
        self.executor.submit(EvalTask(index, scenario, seeds, tuple(c.disable), tuple(c.plugins)))

    def _finish_first(self) -> None:
        """Collect results (of any batch in flight) until the first batch in flight is complete,
        then tell it: append it to the history in ask order."""
        c = self.config
        head = self._inflight[0]
        while head.running:
            res = self.executor.next_result()
            if isinstance(res["index"], str):        # the report's, submitted early
                self._comparison_result(res)
                continue
            idx = int(res["index"])
            bt = next(x for x in self._inflight if idx in x.running)
            ev = bt.running.pop(idx)
            ev.elapsed = float(res["elapsed"])
            self.sim_seconds += ev.elapsed
            self.sim_cpu_seconds += float(res.get("cpu", 0.0))
            if not res["feasible"]:      # refused at power-on although the policy validated
                ev.feasible, ev.reason = False, res["reason"]
            else:
                ev.metrics = res["metrics"]
                ev.value = c.objective.value(res["metrics"], self.weights)
            self.journal.write(ev.record())
            bt.results[idx] = ev
            self._notify(ev)
        self._inflight.pop(0)
        self.history.extend(head.results[head.first + i] for i in range(len(head.points)))

    def _notify(self, ev: Evaluation) -> None:
        if self.on_eval is not None:
            self.on_eval(ev, self)

    # --- comparing -------------------------------------------------------------------------------

    def start_comparison(self) -> None:
        """Submit the report's simulations that do not depend on the search (the presets, or the
        scenario itself when ``esxi-default`` is not compared): the loop does it once it asks no
        more batches, so they fill the workers while the last batches finish."""
        if self._comparison is not None:
            return
        c = self.config
        seeds = report_seeds(c.seed, c.repeats)
        names = list_presets() if c.presets is None else list(c.presets)
        entries: dict[str, dict[str, Any]] = {}
        waiting: set[str] = set()
        for name in names:
            try:
                sc = apply_policy(load_policy(name), self.base, registry=self.space.registry)
                problem = None
            except UserError as exc:
                sc, problem = None, exc.message
            entries[name] = {"kind": "preset", "feasible": sc is not None, "reason": problem}
            if sc is not None:
                waiting.add(name)
                self._submit(name, sc, seeds)
        if BASELINE not in names:
            entries["scenario"] = {"kind": "scenario", "feasible": True, "reason": None}
            waiting.add("scenario")
            self._submit("scenario", self.base, seeds)
        self._comparison = _Comparison(seeds, entries, waiting)

    def _comparison_result(self, res: dict[str, Any]) -> None:
        assert self._comparison is not None
        e = self._comparison.entries[str(res["index"])]
        self._comparison.waiting.discard(str(res["index"]))
        if not res["feasible"]:
            e["feasible"], e["reason"] = False, res["reason"]
            return
        e["metrics"] = res["metrics"]
        e["value"] = self.config.objective.value(res["metrics"], self.weights)

    def compare(self, best: Evaluation | None) -> dict[str, Any]:
        """The best point, the baseline and the presets simulated on the same report seeds (at
        full resolution)."""
        self.start_comparison()
        assert self._comparison is not None
        seeds, entries, waiting = self._comparison.seeds, self._comparison.entries, self._comparison.waiting
        if best is not None and "best" not in entries:
            _, sc, _ = self._policy_scenario(best.assignment, "best", full=True)
            entries["best"] = {"kind": "best", "feasible": True, "reason": None, "index": best.index}
            waiting.add("best")
            self._submit("best", sc, seeds)
        while waiting:
            self._comparison_result(self.executor.next_result())
        return {"seeds": list(seeds), "baseline": BASELINE if BASELINE in entries else "scenario",
                "entries": entries}


def vm_table(names: list[str], before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per-VM latency and stall before (baseline) and after (best)."""
    rows = []
    for i, n in enumerate(names):
        row: dict[str, Any] = {"vm": n}
        for tag, m in (("before", before), ("after", after)):
            if m is None:
                continue
            for k in ("mean_latency", "p99_latency", "stall"):
                row[f"{k}_{tag}"] = m[k][i]
        rows.append(row)
    return rows


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b) or b == 0:
        return None
    return float(a / b)
