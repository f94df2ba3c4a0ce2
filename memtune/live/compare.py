"""Model vs real: the same scaled scenario (and policy) on the simulator and on this host.

``validate()`` runs both drivers for each seed and returns a report: per figure the model's and
the real host's mean and standard deviation over the seeds, the ratio model / real, and whether
the issue's target holds (sharing and compressed bytes within 5 %, swapped bytes and faults within
25 %). A ratio is None where the real figure is 0 (the model's figure is then reported alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memtune.core.memstate import STATE_NAMES
from memtune.core.scenario import Scenario
from memtune.live.driver import HostDriver, SimDriver
from memtune.live.figures import FIGURES
from memtune.live.ksm_rate import fitted_costs
from memtune.live.scale import scale_scenario

TARGETS = {"shared_saved": 0.05, "compressed": 0.05, "swapped": 0.25, "faults": 0.25}
DEFAULT_HOST = 512 * 2**20


@dataclass
class ValidateConfig:
    duration: float = 60.0
    memory_scale: float | None = None       # None: the host scaled to about DEFAULT_HOST
    max_vms: int | None = 16
    seeds: tuple[int, ...] = (1,)
    disable: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def default_scale(sc: Scenario, max_vms: int | None) -> float:
    """The factor that brings the kept VMs' share of the host to about 512 MiB (at least 1)."""
    from memtune.live.scale import pick_vms

    vms = pick_vms(sc.vms, max_vms)
    share = sum(v.memory for v in vms) / sum(v.memory for v in sc.vms)
    return max(1.0, float(2 ** round(math.log2(sc.host.memory * share / DEFAULT_HOST))))


def scaled(sc: Scenario, cfg: ValidateConfig) -> Scenario:
    scale = cfg.memory_scale or default_scale(sc, cfg.max_vms)
    return scale_scenario(sc, scale, cfg.duration, max_vms=cfg.max_vms)


def _stats(values: list[float]) -> dict[str, float]:
    a = np.array(values, dtype=float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0, "runs": values}


def compare_figures(model: list[dict[str, Any]], real: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: model and real statistics over the runs, ratio model / real, target check."""
    out: dict[str, Any] = {}
    for name in FIGURES:
        m = _stats([r[name] for r in model])
        r = _stats([x[name] for x in real])
        ratio = m["mean"] / r["mean"] if r["mean"] else None
        row = {"model": m, "real": r, "ratio": ratio}
        if name in TARGETS:
            tol = TARGETS[name]
            row["target"] = tol
            row["met"] = (ratio is not None and abs(ratio - 1) <= tol) or (m["mean"] == r["mean"] == 0)
        out[name] = row
    for state in STATE_NAMES:
        out[f"time_{state}"] = {
            "model": _stats([r["time_in_state"].get(state, 0.0) for r in model]),
            "real": _stats([x["time_in_state"].get(state, 0.0) for x in real])}
        mm, rr = out[f"time_{state}"]["model"]["mean"], out[f"time_{state}"]["real"]["mean"]
        out[f"time_{state}"]["ratio"] = mm / rr if rr else None
    return out


def validate(sc: Scenario, cfg: ValidateConfig, real: HostDriver, progress: Any = None) -> dict[str, Any]:
    """Run the scaled ``sc`` (policy already applied) on the model and on ``real`` for each seed."""
    s = scaled(sc, cfg)
    sim = SimDriver(cfg.disable)
    model_runs, real_runs = [], []
    for seed in cfg.seeds:
        model_runs.append(sim.run(s, seed=seed))
        if progress:
            progress(f"seed {seed}: model done, real host running {s.duration:g} s")
        real_runs.append(real.run(s, seed=seed))
    measured = measured_latencies(real_runs)
    recal = s.replace(settings={**s.settings, **measured}) if measured else None
    recal_runs = [sim.run(recal, seed=seed) for seed in cfg.seeds] if recal else []
    return {
        "measured_latencies": measured,
        "figures_with_measured_latencies": compare_figures(
            [r["figures"] for r in recal_runs], [r["figures"] for r in real_runs]
        )
        if recal
        else None,
        "scenario": sc.name,
        "scaled": {
            "name": s.name,
            "description": s.description,
            "host_memory": s.host.memory,
            "vms": len(s.vms),
            "duration": s.duration,
            "warmup": s.warmup,
        },
        "seeds": list(cfg.seeds),
        "figures": compare_figures([r["figures"] for r in model_runs], [r["figures"] for r in real_runs]),
        "oom_killed": [r["figures"].get("oom_killed", []) for r in real_runs],
        "limit_waits": [r["figures"].get("limit_waits", {}) for r in real_runs],
        "model_runs": [{k: r[k] for k in ("seed", "figures", "timeline", "vms")} for r in model_runs],
        "real_runs": [{k: r[k] for k in ("seed", "figures", "timeline", "vms", "host")} for r in real_runs],
    }


def measured_latencies(real_runs: list[dict[str, Any]]) -> dict[str, float]:
    """Latency and cost settings as this host delivered them in the runs: ``latency.guest_swap_in``
    is the mean time a worker took to read a page back from its guest swap file (and copy it in);
    ``memtune.ksm_page_cost`` / ``ksm_tree_cost`` give ksmd the scan rates the runs' ``pages_scanned``
    showed (:mod:`memtune.live.ksm_rate`)."""
    secs = sum(v["extra_by_cause"].get("guest_swap_in", 0.0) for r in real_runs for v in r["vms"])
    n = sum(v["guest_swap_ins"] for r in real_runs for v in r["vms"])
    out = {"latency.guest_swap_in": secs / n} if n else {}
    return {**out, **fitted_costs(real_runs)}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A plain table: figure, model, real, ratio, target."""
    lines = [
        f"{report['scaled']['description']}; seeds {report['seeds']}",
        f"{'figure':<18}{'model':>14}{'real':>14}{'model/real':>12}  target",
    ]
    for name, row in report["figures"].items():
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        tgt = ""
        if "target" in row:
            tgt = f"+-{row['target']:.0%} {'met' if row['met'] else 'NOT met'}"
        lines.append(f"{name:<18}{row['model']['mean']:>14.4g}{row['real']['mean']:>14.4g}{ratio:>12}  {tgt}")
    cal = report.get("figures_with_measured_latencies")
    if cal:
        lat = ", ".join(f"{k} = {v * 1e6:.0f} us" for k, v in report["measured_latencies"].items())
        lines.append(f"model again with this host's measured {lat}:")
        for name in ("stall", "mean_latency", "p99_latency"):
            row = cal[name]
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
            lines.append(f"{name:<18}{row['model']['mean']:>14.4g}{row['real']['mean']:>14.4g}{ratio:>12}")
    return lines
