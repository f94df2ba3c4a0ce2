"""What a tuning run is asked to do: :class:`TuneConfig`, and the scenario its evaluations simulate.

Everything here decides the points a run visits and the numbers it reports (except the stopping
rules and the presets compared, which only decide when it stops and what it compares with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from memtune.core.host import page_scale_of
from memtune.core.scenario import Scenario
from memtune.errors import UserError
from memtune.tuner.defaults import default
from memtune.tuner.objective import Objective

OPTIMIZERS = ("gp", "forest", "random", "tpe")
FIDELITIES = ("coarse", "full")
# the policy every run starts from and the report compares with
BASELINE = "esxi-default"


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
    # stop hopeless evaluations early (stall objectives; None: tuner.early_stop)
    early_stop: bool | None = None
    # the shipped presets in the initial design (None: tuner.design_presets)
    design_presets: bool | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(
                f"expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}", field="--optimizer"
            )
        if self.fidelity not in FIDELITIES:
            raise UserError(
                f"expected one of {', '.join(FIDELITIES)}, got {self.fidelity!r}", field="--fidelity"
            )
        for name, flag in (
            ("budget", "--budget"),
            ("batch", "--batch"),
            ("repeats", "--repeats"),
            ("initial_points", "--initial-points"),
        ):
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
        if self.design_presets is None:
            self.design_presets = bool(default("tuner.design_presets"))
        if self.early_stop is None:
            self.early_stop = bool(default("tuner.early_stop"))
        # only the stall fraction has a bound that grows during a run
        self.early_stop = (
            self.early_stop
            and self.objective.kind in ("stall", "weighted")
            and self.objective.slo_p99 is None
        )

    @property
    def n_initial(self) -> int:
        """Initial design size, rounded up to whole batches."""
        return int(math.ceil(self.initial_points / self.batch) * self.batch)


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

    Rank correlation with full resolution and CPU saved are in docs/tuner.md ("Resolution of
    evaluations"). The optimizer only needs the order of points right; the report simulates the
    best point, the baseline and the presets again at full resolution."""
    f = int(default("tuner.coarse_factor"))
    if f <= 1:
        return scenario
    return scenario.replace(host=replace(scenario.host, page_scale=page_scale_of(scenario) * f))
