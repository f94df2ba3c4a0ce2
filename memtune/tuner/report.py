"""What a tuning run leaves behind: the best policy (TOML), ``report.json``, plots, a summary.

``report.json`` holds the run's configuration, the best point and its policy, the best policy, the
baseline (``esxi-default``) and every other preset simulated on the same report seeds (objective
and per-VM metrics), per-VM latency before (baseline) and after (best), and every evaluation.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from memtune.tuner.config import BASELINE
from memtune.tuner.history import Evaluation
from memtune.tuner.loop import Tuner
from memtune.tuner.mapping import assignment_to_policy
from memtune.tuner.outdir import Outputs

POLICY_FILE = "best-policy.toml"
REPORT_FILE = "report.json"


def build_report(tuner: Tuner, comparison: dict[str, Any]) -> dict[str, Any]:
    """The report as plain data."""
    c = tuner.config
    best = tuner.best()
    entries = comparison["entries"]
    base_name = comparison["baseline"]
    base = entries.get(base_name, {})
    best_entry = entries.get("best", {})
    names = [vm.name for vm in tuner.base.vms]
    # the baseline is the first point of a run: its value on the evaluation seeds, beside the best's
    base_x = tuner.baseline_point()
    base_eval = next((e for e in tuner.history if e.x == base_x and e.value is not None), None)
    evals = [e.record() | {"told": v} for e, v in zip(tuner.history, tuner.told()[1], strict=True)]
    return {
        "scenario": c.scenario.name,
        "seed": c.seed,
        "objective": c.objective.describe(),
        "optimizer": c.optimizer,
        "budget": c.budget,
        "batch": c.batch,
        "repeats": c.repeats,
        "duration": tuner.base.duration,
        "warmup": tuner.base.warmup,
        # evaluations ran at this resolution; "best", "presets" and "vms" are at full resolution
        "evaluation_fidelity": {"name": c.fidelity, "tick": tuner.eval_base.tick,
                                "page_scale": tuner.eval_base.host.page_scale},
        "executor": tuner.executor.describe(),
        "stop_reason": tuner.stop_reason,
        "evaluations": len(tuner.history),
        "simulated": sum(1 for e in tuner.history if e.metrics is not None),
        "infeasible": sum(1 for e in tuner.history if not e.feasible),
        "penalty": tuner.penalty(),
        "wall_seconds": time.monotonic() - tuner.started,
        # time the search spent: simulations (wall and CPU seconds summed over evaluations, in the
        # workers) and proposing batches (in this process, overlapping the simulations)
        "simulation_seconds": tuner.sim_seconds,
        "simulation_cpu_seconds": tuner.sim_cpu_seconds,
        "optimizer_seconds": tuner.optimizer_seconds,
        "optimizer_cpu_seconds": tuner.optimizer_cpu_seconds,
        "space": [d.describe() for d in tuner.space.dimensions],
        "fixed": tuner.space.fixed,
        "groups": {k: list(v) for k, v in tuner.space.groups.items()},
        "best": None if best is None else {
            "index": best.index, "point": best.assignment, "value_during_search": best.value,
            "value": best_entry.get("value"), "metrics": best_entry.get("metrics"),
        },
        "baseline_value_during_search": None if base_eval is None else base_eval.value,
        "baseline": base_name,
        "ratio_to_baseline": ratio(best_entry.get("value"), base.get("value")),
        "report_seeds": comparison["seeds"],
        "presets": {k: {kk: vv for kk, vv in v.items() if kk != "kind"}
                    for k, v in entries.items() if k != "best"},
        "vms": vm_table(names, base.get("metrics"), best_entry.get("metrics")),
        "history": evals,
    }


def write_outputs(tuner: Tuner, comparison: dict[str, Any], *, plots: bool = True) -> dict[str, Any]:
    """Write the best policy, ``report.json`` and the plots into the run's directory.

    Each file is written whole or not at all (temporary file, then rename), in order of value: the
    journal is already safe, then the best policy, ``report.json``, the plots. A write that fails
    (disk full) ends in :class:`memtune.errors.OutputError` naming the files kept."""
    out = tuner.out
    report = build_report(tuner, comparison)
    best = tuner.best()
    outputs = Outputs(out, kept=[tuner._journal_path])
    files: dict[str, str] = {"journal": str(tuner._journal_path)}
    policy = None
    if best is not None:
        desc = (
            f"tuned by memtune optimize on {tuner.config.scenario.name} ({tuner.config.objective.label}); "
            f"{report['ratio_to_baseline'] if report['ratio_to_baseline'] is not None else 'n/a'} "
            f"x {report['baseline']}"
        )
        policy = assignment_to_policy(
            tuner.space, best.assignment, f"tuned-{tuner.config.scenario.name}", desc
        )
        report["best"]["policy"] = policy.to_dict()
    if plots:
        from memtune.tuner.plots import knob_importance

        report["knob_importance"] = dict(knob_importance(tuner))
    if policy is not None:
        files["policy"] = str(outputs.write_text(POLICY_FILE, policy.to_toml()))
    files["report"] = str(out / REPORT_FILE)
    report["files"] = files
    outputs.write_text(REPORT_FILE, json.dumps(report, indent=1, default=_plain) + "\n")
    if plots:
        from memtune.tuner.plots import write_plots

        files.update(write_plots(tuner, report, outputs))
    return report


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fmt_value(value: float | None, objective_kind: str, slo: bool) -> str:
    if value is None:
        return "n/a"
    if not slo and objective_kind in ("mean-latency", "p99-latency"):
        return f"{value * 1e6:.2f}us"
    return f"{value:.4f}"


def summary(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    obj = report["objective"]
    slo = obj["slo_p99"] is not None
    lines = [
        f"memtune optimize: {report['scenario']}, {report['evaluations']} evaluations "
        f"({report['simulated']} simulated, {report['infeasible']} infeasible), stopped: "
        f"{report['stop_reason']}, {report['wall_seconds']:.0f} s"
    ]
    best = report["best"]
    presets = report["presets"]
    base = presets.get(report["baseline"], {})
    if best is None:
        lines.append("no feasible point found")
    else:
        r = report["ratio_to_baseline"]
        lines.append(
            f"objective ({obj['label']}): best {fmt_value(best['value'], obj['kind'], slo)} vs "
            f"{report['baseline']} {fmt_value(base.get('value'), obj['kind'], slo)}"
            + (f" = {r:.2f}x" if r is not None else "")
        )
        others = [
            f"{k} {fmt_value(v.get('value'), obj['kind'], slo)}" if v.get("feasible") else f"{k} infeasible"
            for k, v in presets.items()
            if k != report["baseline"]
        ]
        if others:
            lines.append("presets on the same seeds: " + ", ".join(others))
        searched = report.get("baseline_value_during_search")
        if searched is not None:
            r = ratio(best["value_during_search"], searched)
            lines.append(
                f"during the search (evaluation seeds): best "
                f"{fmt_value(best['value_during_search'], obj['kind'], slo)}"
                f" vs {report['baseline']} {fmt_value(searched, obj['kind'], slo)}"
                + (f" = {r:.2f}x" if r is not None else "")
            )
        lines.append(f"best policy (evaluation #{best['index']}): {_policy_line(best.get('policy'))}")
    for name in ("policy", "report"):
        if name in report.get("files", {}):
            lines.append(f"{name}: {report['files'][name]}")
    return "\n".join(lines)


def _policy_line(policy: dict[str, Any] | None) -> str:
    if not policy:
        return "-"
    parts = [f"{k}={v}" for k, v in policy.get("settings", {}).items()]
    for rule in policy.get("vm", []):
        knobs = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in rule.items() if k != "name")
        parts.append(f"{rule['name']}: {knobs}")
    return "; ".join(parts)


def vm_table(
    names: list[str], before: dict[str, Any] | None, after: dict[str, Any] | None
) -> list[dict[str, Any]]:
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


__all__ = ["BASELINE", "Evaluation", "build_report", "ratio", "summary", "vm_table", "write_outputs"]
