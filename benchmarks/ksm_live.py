"""KSM and zram on scaled scenarios, model against this host, tick by tick (issue 21), as JSON.

    sudo python -m benchmarks.ksm_live [--scenarios small,db,vdi] [--seeds 1,2] [--duration 30]
                                       [--host-scale 1] [--out benchmarks/results/ksm_live.json]
    python -m benchmarks.ksm_live --table FILE [FILE ...]     # the docs/live.md table

Each scenario (esxi-default, scaled as ``benchmarks.validate`` scales it, with its Linux settings:
KSM at 1000 pages / 20 ms, zram, LRU victims) runs on this host once per seed; the Linux driver
records every KSM counter and zram's ``mm_stat`` each tick. ksmd's per-page cost is fitted to those
runs (``memtune.live.ksm_rate``), and the model runs each seed twice, with the default cost and
with the fitted one, recording the same counters each tick. Per scenario: the fitted cost, and per
seed the real and model series of ``pages_scanned``, ``full_scans``, ``pages_sharing``,
``pages_unshared``, ``pages_volatile`` and compressed bytes (zram's ``orig_data_size``; the model's
compressed pages), the end figures and their ratios, and the load average before and after each
real run. ``--host-scale 2`` doubles the host's memory on both sides (no reclaim: KSM alone).
Needs root; skips (exit 0, "skipped" in the JSON) where live runs are impossible.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.validate import LINUX, with_settings
from memtune.core.engine import Engine
from memtune.core.scenario import Scenario, load_scenario
from memtune.core.simulation import build_host
from memtune.live.compare import ValidateConfig, scaled
from memtune.live.figures import sim_figures
from memtune.live.ksm_rate import first_scan_rate, fitted_costs
from memtune.live.safety import unavailable
from memtune.policies import apply_policy, load_policy

SERIES = ("pages_scanned", "full_scans", "pages_sharing", "pages_unshared", "pages_volatile")
END = ("shared_saved", "compressed", "compression_cache", "swapped", "ballooned")


def scenario(name: str, duration: float, host_scale: float) -> Scenario:
    s = with_settings(scaled(apply_policy(load_policy("esxi-default"), load_scenario(name)),
                             ValidateConfig(duration=duration)), LINUX)
    if host_scale != 1:
        s = s.replace(host=dataclasses.replace(s.host, memory=int(s.host.memory * host_scale)))
    return s


def model_run(s: Scenario, seed: int) -> dict[str, Any]:
    """The model with KSM counters and compressed bytes read after every tick."""
    from memtune.plugins.ksm import counters

    h = build_host(s, seed=seed)
    ticks: list[dict[str, Any]] = []

    def record(_: float) -> None:
        z = h.plugin_data.get("compression")
        ticks.append({"t": h.now, "ksm": counters(h),
                      "compressed": float(h.pages.counts[:, z.code].sum() * h.page_bytes) if z else 0.0})

    result = Engine(h).run(progress=record)
    series = _series([x["t"] for x in ticks], [x["ksm"] for x in ticks], [x["compressed"] for x in ticks])
    return {"figures": sim_figures(result), "series": series}


def _series(t: list[float], ksm: list[dict], compressed: list[float]) -> dict[str, list[float]]:
    out = {"t": [round(x, 3) for x in t], "compressed_mib": [round(c / 2**20, 2) for c in compressed]}
    for k in SERIES:
        out[k] = [float(x.get(k, 0)) for x in ksm]
    return out


def real_run(s: Scenario, seed: int) -> dict[str, Any]:
    """A live run; the kernel's ``pages_scanned`` and ``full_scans`` count from boot: taken from the
    run's start (the first tick's value less the first scan's rate times its time)."""
    from memtune.live.linux import LinuxDriver, LiveOptions

    load0 = os.getloadavg()[0]
    r = LinuxDriver(LiveOptions(lock_timeout=1800)).run(s, seed=seed)
    tl = r["timeline"]
    series = _series(tl["t"], tl["ksm"], tl["zram_orig"])
    rate = first_scan_rate(tl) or 0.0
    if series["t"]:
        start = series["pages_scanned"][0] - rate * series["t"][0]
        series["pages_scanned"] = [x - start for x in series["pages_scanned"]]
        series["full_scans"] = [x - series["full_scans"][0] for x in series["full_scans"]]
    return {"run": r, "figures": r["figures"], "series": series, "load": [load0, os.getloadavg()[0]]}


def _ends(model: list[dict], real: list[dict]) -> dict[str, Any]:
    out = {}
    for f in END:
        m = [x["figures"][f] / 2**20 for x in model]
        r = [x["figures"][f] / 2**20 for x in real]
        out[f] = {"model_mib": [round(x, 2) for x in m], "real_mib": [round(x, 2) for x in r],
                  "ratio": round(sum(m) / sum(r), 3) if sum(r) else None}
    return out


def run_scenario(name: str, seeds: list[int], duration: float, host_scale: float) -> dict[str, Any]:
    s = scenario(name, duration, host_scale)
    real = [real_run(s, seed) for seed in seeds]
    cost = fitted_costs([x["run"] for x in real])
    fitted = with_settings(s, cost)
    default = [model_run(s, seed) for seed in seeds]
    model = [model_run(fitted, seed) for seed in seeds]
    return {
        "scaled": s.description, "host_mib": s.host.memory / 2**20, "fitted": cost,
        "end_fitted_cost": _ends(model, real), "end_default_cost": _ends(default, real),
        "load": [x["load"] for x in real],
        "seeds": {str(seed): {"real": r["series"], "model": m["series"], "model_default_cost": d["series"]}
                  for seed, r, m, d in zip(seeds, real, model, default, strict=True)},
    }


def run(scenarios: str, seeds: str, duration: float, host_scale: float) -> dict[str, Any]:
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    seed_list = [int(x) for x in seeds.split(",")]
    return {"config": {"duration": duration, "seeds": seed_list, "host_scale": host_scale, "linux": LINUX,
                       "policy": "esxi-default", "cpus": os.cpu_count()},
            "scenarios": {n: run_scenario(n, seed_list, duration, host_scale) for n in scenarios.split(",")}}


def _pair(v: dict[str, Any]) -> str:
    m, r = v["model_mib"], v["real_mib"]
    ratio = "-" if v["ratio"] is None else f"{v['ratio']:.3g}"
    return f"{' / '.join(f'{x:.1f}' for x in m)} : {' / '.join(f'{x:.1f}' for x in r)} ({ratio})"


def table(files: list[str]) -> str:
    """Per scenario: host, fitted cost, pages scanned and the end figures, model : real per seed."""
    lines = ["| scenario | host (MiB) | page cost (us) | pages_scanned at the end, model / real | "
             "shared_saved (MiB), model : real (ratio) | default cost | compressed (MiB) | load |",
             "|---|---|---|---|---|---|---|---|"]
    for f in files:
        data = json.loads(Path(f).read_text())
        for name, r in data.get("scenarios", {}).items():
            sc = [x["model"]["pages_scanned"][-1] / max(x["real"]["pages_scanned"][-1], 1)
                  for x in r["seeds"].values()]
            loads = [v for pair in r["load"] for v in pair]
            cost = r["fitted"].get("memtune.ksm_page_cost")
            fit, default = r["end_fitted_cost"], r["end_default_cost"]
            lines.append(f"| {name} | {r['host_mib']:.0f} | {'-' if cost is None else f'{cost * 1e6:.1f}'} | "
                         f"{' / '.join(f'{x:.2f}' for x in sc)} | {_pair(fit['shared_saved'])} | "
                         f"{_pair(default['shared_saved'])} | {_pair(fit['compressed'])} | "
                         f"{min(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="small,db,vdi")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--host-scale", type=float, default=1.0, help="host memory x this on both sides")
    ap.add_argument("--out", default="benchmarks/results/ksm_live.json")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="print the result files' table, stop")
    args = ap.parse_args(argv)
    if args.table:
        try:
            print(table(args.table))
        except (OSError, ValueError, KeyError) as exc:
            print(f"{' '.join(args.table)}: cannot read a ksm_live result ({exc})", file=sys.stderr)
            return 2
        return 0
    result = run(args.scenarios, args.seeds, args.duration, args.host_scale)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name, r in result.get("scenarios", {}).items():
        ends = r["end_fitted_cost"]
        print(name, {k: v["ratio"] for k, v in ends.items()}, "fitted", r["fitted"], file=sys.stderr)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
