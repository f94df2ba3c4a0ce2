"""Defaults of the tuner, each a :class:`~memtune.core.settings.Setting` naming where it comes from.

These are not host settings (a scenario or policy cannot set them); they are the defaults of
``memtune optimize`` and :class:`memtune.tuner.loop.TuneConfig`, kept here so every number has a
source next to it.
"""

from __future__ import annotations

from memtune.core.settings import Setting

TUNER_SETTINGS = {s.name: s for s in (
    Setting("tuner.budget", "int", 40, "Evaluations (points told to the optimizer) per run.",
            "measured: keeps `memtune optimize` on `small` near one minute on 2 cores "
            "(benchmarks/tuner.py); GP reaches most of its gain by 40 points there", owner="tuner",
            minimum=1),
    Setting("tuner.batch", "int", 4, "Points asked from the optimizer at once (independent of workers).",
            "model choice: 2 x the 2-core reference machine, so both workers stay busy; skopt "
            "constant-liar batches stay close to sequential BO at this size", owner="tuner", minimum=1),
    Setting("tuner.initial_points", "int", 12, "Points of the initial Latin-hypercube design before "
            "the surrogate model is used (rounded up to a whole number of batches).",
            "skopt default n_initial_points = 10, rounded up to whole batches of 4", owner="tuner",
            minimum=1),
    Setting("tuner.keep_baseline", "float", 0.7,
            "Share of knobs that keep their esxi-default value in each initial design point.",
            "model choice: measured on `small`, a fully random design point usually holds some "
            "knob at a harmful value (stall 0.05-0.5 vs 0.012 default), hiding the knobs that "
            "help (cross-VM sharing: 0.001)", owner="tuner", minimum=0, maximum=1),
    Setting("tuner.repeats", "int", 1, "Simulations (seeds) per point; the objective is their mean.",
            "measured: on `small` (30 min) the stall fraction of one policy differs by ~5 % between "
            "seeds, far less than between policies, so one seed per point buys twice the points; "
            "the GP models the rest as noise", owner="tuner", minimum=1),
    Setting("tuner.fidelity", "str", "coarse",
            "Resolution of the evaluations: `coarse` (ticks and simulated pages `tuner.coarse_factor` "
            "times as long and as large) or `full` (the scenario's own). The report always compares "
            "the best point, the baseline and the presets at full resolution.",
            "measured on 17 points of a `small` run: coarse costs 1.14 s of CPU per evaluation "
            "instead of 2.11 s and orders the points like full resolution (Spearman 0.994); the "
            "optimizer needs the order, the report the numbers", owner="tuner", choices=("coarse", "full")),
    Setting("tuner.coarse_factor", "int", 2,
            "How much longer the ticks and larger the simulated pages of coarse evaluations are.",
            "measured on `small`: x2 tick alone gives Spearman 0.988 and 20 % less CPU, x2 pages "
            "alone 0.997 and 19 %, both 0.994 and 46 %", owner="tuner", minimum=1),
    Setting("tuner.workers", "int", 2, "Local worker processes by default.",
            "the 2-core reference machine of the issue", owner="tuner", minimum=1),
    Setting("tuner.penalty_margin", "float", 0.5,
            "Infeasible points are told worst + margin x (worst - best) of the feasible values seen "
            "so far (at least 10 % of |worst| above it).",
            "model choice: worse than every feasible value, yet on the same scale so the GP's "
            "normalisation is not dominated by the penalty", owner="tuner", minimum=0),
    Setting("tuner.no_feasible_penalty", "float", 1.0,
            "Value told for infeasible points while no feasible point is known.",
            "stall fraction's upper bound (1.0); latency objectives are rescaled once a feasible "
            "value exists", owner="tuner"),
)}


def default(name: str):
    """The default value of tuner setting ``name`` in base units."""
    s = TUNER_SETTINGS[name]
    return s.coerce(s.default)
