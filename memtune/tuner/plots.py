"""PNG plots of a tuning run (matplotlib, Agg backend: no display needed).

- ``convergence.png``: every evaluation's objective and the best so far (infeasible points as x
  on the penalty line);
- ``vm-latency.png``: per-VM mean extra latency and stall, baseline vs best, on the report seeds;
- ``knobs.png``: objective against the knobs that matter most (impurity importance of an
  extra-trees regressor fitted to the feasible evaluations; knobs in space order when too few).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memtune.tuner.loop import Tuner
from memtune.tuner.outdir import Outputs

MAX_KNOB_PANELS = 4


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def knob_importance(tuner: Tuner) -> list[tuple[str, float]]:
    """(dimension, importance) for the space's dimensions, most important first."""
    feas = [e for e in tuner.history if e.feasible and e.value is not None]
    dims = tuner.space.dimensions
    if len(feas) < 5:
        return [(d.name, 0.0) for d in dims]
    from sklearn.ensemble import ExtraTreesRegressor
    from skopt.space import Space

    space = Space(tuner.space.skopt_dimensions())
    X = space.transform([e.x for e in feas])
    y = np.array([e.value for e in feas])
    cols = [d for d in dims for _ in range(space.dimensions[dims.index(d)].transformed_size)]
    model = ExtraTreesRegressor(n_estimators=200, min_samples_leaf=2, random_state=0).fit(X, y)
    imp: dict[str, float] = {}
    for d, v in zip(cols, model.feature_importances_, strict=True):
        imp[d.name] = imp.get(d.name, 0.0) + float(v)
    return sorted(imp.items(), key=lambda kv: (-kv[1], kv[0]))


def _save(plt: Any, fig: Any, outputs: Outputs, name: str) -> str:
    """``fig`` as PNG ``name``, written whole or not at all; the figure is closed either way."""
    try:
        return str(outputs.write_with(name, lambda f: fig.savefig(f, format="png", dpi=100)))
    finally:
        plt.close(fig)


def write_plots(tuner: Tuner, report: dict[str, Any], outputs: Outputs | None = None) -> dict[str, str]:
    """Write the three plots into the run's directory (through ``outputs``, atomically); returns
    name -> path. The knob panel uses ``report["knob_importance"]`` when the report has it."""
    plt = _pyplot()
    outputs = outputs or Outputs(tuner.out)
    files: dict[str, str] = {"convergence": _convergence(plt, tuner, report, outputs)}
    rows = report["vms"]
    if rows and "mean_latency_after" in rows[0] and "mean_latency_before" in rows[0]:
        files["vm_latency"] = _vm_latency(plt, rows, report, outputs)
    if "knob_importance" not in report:
        report["knob_importance"] = dict(knob_importance(tuner))
    knobs = _knobs(plt, tuner, report, outputs)
    if knobs is not None:
        files["knobs"] = knobs
    return files


def _convergence(plt: Any, tuner: Tuner, report: dict[str, Any], outputs: Outputs) -> str:
    """Every evaluation's told value and the best so far, against the baseline."""
    told = tuner.told()[1]
    idx = np.array([e.index for e in tuner.history])
    feas = np.array([e.feasible for e in tuner.history], dtype=bool)
    vals = np.array(told, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    if idx.size:
        ax.scatter(idx[feas], vals[feas], s=14, color="tab:blue", label="evaluation")
        if (~feas).any():
            ax.scatter(
                idx[~feas], vals[~feas], s=20, marker="x", color="tab:red", label="infeasible (penalty)"
            )
        best = np.minimum.accumulate(np.where(feas, vals, np.inf))
        ok = np.isfinite(best)
        ax.step(idx[ok], best[ok], where="post", color="black", label="best so far")
    base = report["presets"].get(report["baseline"], {}).get("value")
    if base is not None:
        ax.axhline(base, color="tab:gray", linestyle="--", label=report["baseline"])
    pos = vals[np.isfinite(vals) & (vals > 0)]
    if pos.size == vals.size and pos.size and pos.max() / pos.min() > 20:
        ax.set_yscale("log")  # objectives often span decades between good and bad points
    ax.set_xlabel("evaluation")
    ax.set_ylabel(tuner.config.objective.label)
    ax.set_title(f"convergence: {report['scenario']} ({report['optimizer']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, outputs, "convergence.png")


def _vm_latency(plt: Any, rows: list[dict[str, Any]], report: dict[str, Any], outputs: Outputs) -> str:
    """Per-VM mean extra latency and stall, baseline beside tuned."""
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.45 * len(rows) + 2), 6), sharex=True)
    x = np.arange(len(rows))
    w = 0.4
    for ax, key, scale, unit in (
        (axes[0], "mean_latency", 1e6, "mean extra latency (us)"),
        (axes[1], "stall", 100, "stall (%)"),
    ):
        ax.bar(x - w / 2, [r[f"{key}_before"] * scale for r in rows], w, label=report["baseline"])
        ax.bar(x + w / 2, [r[f"{key}_after"] * scale for r in rows], w, label="tuned")
        ax.set_ylabel(unit)
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(x, [r["vm"] for r in rows], rotation=60, fontsize=7)
    axes[0].set_title(f"per-VM latency before / after: {report['scenario']}")
    fig.tight_layout()
    return _save(plt, fig, outputs, "vm-latency.png")


def _knobs(plt: Any, tuner: Tuner, report: dict[str, Any], outputs: Outputs) -> str | None:
    """The objective against the most important knobs (None when there is nothing to show)."""
    ranked = list(report["knob_importance"].items())[:MAX_KNOB_PANELS]
    feas_ev = [e for e in tuner.history if e.feasible and e.value is not None]
    if not (ranked and feas_ev):
        return None
    fig, axes = plt.subplots(1, len(ranked), figsize=(3.2 * len(ranked), 3.2), sharey=True, squeeze=False)
    best = tuner.best()
    for ax, (name, imp) in zip(axes[0], ranked, strict=True):
        xs = [e.assignment[name] for e in feas_ev]
        ys = [e.value for e in feas_ev]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs):
            ax.scatter(xs, ys, s=12)
            if best is not None:
                ax.scatter([best.assignment[name]], [best.value], s=60, marker="*", color="tab:red")
        else:
            cats = sorted({str(v) for v in xs})
            ax.scatter([cats.index(str(v)) for v in xs], ys, s=12)
            ax.set_xticks(range(len(cats)), cats)
        ax.set_xlabel(f"{name} ({imp:.2f})", fontsize=8)
    axes[0][0].set_ylabel(tuner.config.objective.label, fontsize=8)
    fig.suptitle("objective vs the most important knobs (importance)", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, outputs, "knobs.png")
