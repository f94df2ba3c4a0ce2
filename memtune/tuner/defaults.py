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
            "Share of knobs (of knob blocks, see tuner.block_moves) that keep their esxi-default "
            "value in each initial design point.",
            "model choice: measured on `small`, a fully random design point usually holds some "
            "knob at a harmful value (stall 0.05-0.5 vs 0.012 default), hiding the knobs that "
            "help (cross-VM sharing: 0.001); with knob blocks, 0.5 measured on `db` (GP at 40, "
            "30 min seeds 11/1/2: 0.48, 0.55, 0.52; 10 min seeds 11/2: 0.95, 0.45) against 0.7 "
            "(0.54, 0.34, 0.59; 0.42, 0.90): no better", owner="tuner", minimum=0, maximum=1),
    Setting("tuner.design_presets", "bool", True,
            "The initial design holds the shipped presets (translated into the search space) right "
            "after esxi-default, before its Latin-hypercube points.",
            "model choice: a capacity planner expects the tuner never to report a policy worse "
            "than a preset it ships (on the evaluation seeds). Its effect on the ratios was not "
            "measured apart from the local steps; on `db` seed 11 the steps start from `mom-like`'s "
            "point (salting 0, 10-minute scan)", owner="tuner"),
    Setting("tuner.design_combine", "bool", True,
            "The initial design holds, after the presets, each preset with the knob blocks it leaves "
            "at esxi-default taken from the other presets (e.g. one preset's sharing block with "
            "another's reservations).",
            "model choice: presets change disjoint mechanisms, so their gains may add up",
            owner="tuner"),
    Setting("tuner.design_mix", "float", 0.15,
            "Share of knob blocks of a screening design point that take a value a shipped preset "
            "gives that block (when one does), instead of the baseline's or the hypercube's.",
            "model choice: combinations of the presets' blocks around the default", owner="tuner",
            minimum=0, maximum=1),
    Setting("tuner.bound_jump", "float", 0.3,
            "Share of the stepped numeric knobs of a local move that jump to the bound the step "
            "points to (low or high) instead of stepping.",
            "model choice: many knobs act monotonically (a faster sharing scan, a larger "
            "reservation), so their best value is a bound that small steps reach late", owner="tuner",
            minimum=0, maximum=1),
    Setting("tuner.corners", "bool", True,
            "The acquisition also considers the best point with one knob block moved to a corner "
            "(numeric knobs at their bounds, categorical ones at each value).",
            "two-level screening (Plackett & Burman, Biometrika 1946): monotone knobs are best at "
            "a bound", owner="tuner"),
    Setting("tuner.donors", "int", 8,
            "The acquisition also considers each local centre with one knob block copied from one "
            "of this many best points told (0 or 1: none).",
            "model choice: per-group knobs act mostly through their own group, so good blocks of "
            "different points may add up", owner="tuner", minimum=0),
    Setting("tuner.structured_per_batch", "int", 1,
            "Points of each model-guided batch (its last ones) chosen by the acquisition among the "
            "structured candidates only (tuner.corners, tuner.donors), the others among all.",
            "model choice: over thousands of random local moves, expected improvement rarely picks "
            "one of the few dozen corners", owner="tuner", minimum=0),
    Setting("tuner.local_step", "float", 0.05,
            "Smallest local step: a normal step of this many times a knob's range (log scale for "
            "log-uniform knobs); see tuner.step_share and tuner.step_scales.",
            "measured on `db` (GP at 40, stall / esxi-default on the report seeds, seeds 11/1/2): "
            "redraws only 0.73 (seed 11), 0.81 (seed 1); steps of 0.1 only (categorical knobs "
            "kept) 0.33, 0.60, 0.62; half steps of 0.1, half redraws 0.53 (seed 11); steps of "
            "0.05-0.4 with switches flipped 0.36, 0.62, 0.34", owner="tuner", minimum=0),
    Setting("tuner.step_share", "float", 1.0,
            "Share of the local moves that step the numeric knobs of the blocks they change from "
            "the centre's values instead of redrawing them from their priors.",
            "measured as tuner.local_step: redraws found the TPS block on `db` but then spent most "
            "points on harmful limits (0.2-0.3 stall against 0.05 for the best); steps refine the "
            "scan time and rate cap and reach 0.33-0.36 on seed 11", owner="tuner", minimum=0, maximum=1),
    Setting("tuner.step_scales", "int", 4,
            "Local steps come in this many sizes: tuner.local_step times 1, 2, 4 ... (each equally "
            "likely), so the acquisition can choose between refining and moving further.",
            "measured as tuner.local_step (steps of 0.05-0.4 against 0.1 only)", owner="tuner", minimum=1),
    Setting("tuner.step_flip", "float", 2.0,
            "In a local step, each categorical knob of the changed blocks is redrawn with "
            "probability step_flip x the step's size (0.1 for the smallest step, 0.8 for the "
            "largest), else it keeps the centre's value.",
            "measured as tuner.local_step: with switches always kept, a run whose best block has "
            "salting 2 never tries sharing across VMs (`db` seed 1)", owner="tuner", minimum=0),
    Setting("tuner.local_share", "float", 1.0,
            "Share of the acquisition's random candidates that are local moves around the best "
            "points told so far (a few knobs redrawn); the rest are uniform over the space.",
            "measured on `db` (10 min, GP at 40 evaluations, seeds 11/1/2/3; benchmarks/tuner.py "
            "gp_vs_random): stall / esxi-default 1.02, 0.55, 0.93, 1.03 with uniform candidates "
            "(expected improvement picked points that changed most of the 16 knobs at once); "
            "block moves with share 0.5: 0.97, 0.72, 0.52, 0.70; share 1: 0.48, 0.42, 1.00, 0.36. "
            "The initial design does the global exploration", owner="tuner", minimum=0, maximum=1),
    Setting("tuner.global_every", "int", 0,
            "Every n-th model-guided point is chosen among uniform candidates only (0: never).",
            "measured (GP at 40 evaluations, stall / esxi-default): `db` 10 min, seeds 11/1/2/3: "
            "never 0.42, 0.45, 0.90, 0.37; every 4th 0.41, 0.59, 0.77, 0.72; every 2nd 0.43, 0.88, "
            "1.06, 0.74. `small` (one seed, noisier): 0.37, 0.25, 0.31; all meet its 0.5 target",
            owner="tuner", minimum=0),
    Setting("tuner.local_changes", "float", 1.0,
            "Expected number of knob blocks a local candidate redraws (each with probability "
            "changes / blocks, at least one).",
            "measured as tuner.local_share (share 1, block moves): 1 block: 0.42, 0.45, 0.90, 0.37; "
            "2: 0.48, 0.42, 1.00, 0.36; 3: 0.43, 0.90. TuRBO (Eriksson et al., NeurIPS 2019) "
            "perturbs ~20/d of the coordinates; our budgets are 10x smaller", owner="tuner", minimum=0),
    Setting("tuner.local_centres", "int", 3,
            "Best feasible points told so far that local candidates start from.",
            "measured (GP at 40 evaluations, stall / esxi-default; `db` 30 min seeds 11/1/2, `db` "
            "10 min seeds 11/2): 1 centre 0.35, 0.40, 0.41 / 1.02, 1.00; 2 centres 0.43, 0.41, "
            "0.59 / 0.62, 0.99; 3 centres 0.54, 0.34, 0.59 / 0.42, 0.90 (and 0.45, 0.37 on 10-min "
            "seeds 1, 3): fewer centres refine the full `db` run better but miss the 10-minute "
            "run's narrow gain", owner="tuner", minimum=1),
    Setting("tuner.block_moves", "float", 1.0,
            "Share of local moves that redraw whole blocks of knobs (one plugin's host knobs; one "
            "plugin's knobs for one VM group), the others redraw single knobs; above 0 the initial "
            "design also keeps or varies whole blocks.",
            "measured as tuner.local_share (share 1): single knobs 1.02, 0.55, 0.93, 1.03; blocks "
            "0.48, 0.42, 1.00, 0.36. On `db` the gain needs TPS's salting, scan time and rate cap "
            "changed together (the scan speed is min(VM size / Mem.ShareScanTime, "
            "Mem.ShareRateMax)): stall 0.0236 default, 0.0223 / 0.0216 / 0.0166 for one or two of "
            "them, 0.0066 for all three. Half block, half single-knob moves: 0.94, 0.95, 1.00, 0.39",
            owner="tuner", minimum=0, maximum=1),
    Setting("tuner.repeats", "int", 1, "Simulations (seeds) per point; the objective is their mean.",
            "measured: on `small` (30 min) the stall fraction of one policy differs by ~5 % between "
            "seeds, far less than between policies, so one seed per point buys twice the points; "
            "the GP models the rest as noise", owner="tuner", minimum=1),
    Setting("tuner.seed_probes", "int", 3,
            "Seeds the baseline is simulated on before a model-guided search (gp, forest); the "
            "points are evaluated on the tuner.repeats of them where it does worst (see "
            "memtune.tuner.seeds). At most tuner.repeats: no probe.",
            "measured on `vdi` (esxi-default, evaluation seeds 0-3 of tuner seeds 1-4): the first "
            "seed alone held no boot storm on 2 of 4 tuner seeds, any three held one; `db` and `small` "
            "seeds differ by 1-3 % (docs/tuner.md)",
            owner="tuner", minimum=1),
    Setting("tuner.fidelity", "str", "coarse",
            "Resolution of the evaluations: `coarse` (simulated pages `tuner.coarse_factor` times "
            "as large) or `full` (the scenario's own). The report always compares the best point, "
            "the baseline and the presets at full resolution.",
            "measured on 17 points of a `small` run: coarse orders the points like full resolution "
            "(Spearman 0.997) for about 20 % less CPU; the optimizer needs the order, the report "
            "the numbers", owner="tuner", choices=("coarse", "full")),
    Setting("tuner.coarse_factor", "int", 2,
            "How much larger the simulated pages of coarse evaluations are.",
            "measured: x2 pages keeps the order of points on `small` (Spearman 0.997) and the "
            "effects on `vdi` (stall 0.0050 / 0.0005 at Mem.MemMinFreePct 0 / 2 against 0.0061 / "
            "0.0005 at full resolution); x4 pages lost them (0.0037 / 0.0046) and saved no more CPU; "
            "x2 ticks erased them (0.0082 at both)", owner="tuner", minimum=1),
    Setting("tuner.early_stop", "bool", True,
            "Stop an evaluation once its stall objective is sure to end above tuner.stop_factor x "
            "the best value known when its batch was asked (a lower bound that only grows: stall "
            "so far over the running time left); the optimizer is told the stall rate so far.",
            "lossless for the best point: a stopped point is certainly worse than the best by the "
            "factor. Multi-fidelity by early stopping (successive halving, Jamieson & Talwalkar, "
            "AISTATS 2016; Hyperband, Li et al., JMLR 2018) with a bound instead of a guess; CPU "
            "saved in benchmarks/tuner.py", owner="tuner"),
    Setting("tuner.stop_factor", "float", 2.0,
            "An evaluation stops once its objective is sure to exceed this multiple of the best "
            "value known (see tuner.early_stop).",
            "model choice: the local moves refine points within a few tens of per cent of the best; "
            "points twice as bad only need to be known as bad", owner="tuner", minimum=1),
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
