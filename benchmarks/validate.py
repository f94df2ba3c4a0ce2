"""Model vs this Linux host on scaled scenarios (issue 21), as JSON.

    sudo python -m benchmarks.validate [--scenarios small,db,vdi] [--seeds 1,2] [--duration 30]
                                       [--out benchmarks/results/validate.json]
    python -m benchmarks.validate --table benchmarks/results/validate.json   # the docs/live.md table

For each scenario (scaled by ``memtune.live.compare.scaled``: host about 512 MiB, at most 16 VMs,
the 30-minute schedule compressed into ``--duration``) and each policy (the presets, and a policy
tuned on the scaled scenario with the simulator), the scenario runs on the model and on this host
once per seed. Both sides use the Linux mechanisms the host has: KSM (``memtune.sharing = "ksm"``,
``KSM_KNOBS``) and zram (``memtune.compression = "zram"``). The model's latencies are this host's:
``memtune calibrate`` (faults, decompression, the swap file's device) once, and the guest swap-in
the workers measured in the scenario's ``esxi-default`` runs, which run first (without the time a
worker then waited for a CPU, reported per run as ``cpu_wait`` seconds; the calibrated swap device
read where those runs had no guest swap-in); the tuner searches with the same settings. Per policy
and figure: model mean, real mean, ratio; the load average before and after each real run. Per
scenario: the policies ranked by stall on each side. Targets (issue 21): sharing and compressed
bytes within 5 %, swapped bytes and faults within 25 %, the tuned policy's real stall at most 0.6
of esxi-default's on ``small``. Needs root; skips (exit 0,
"skipped" in the JSON) where live runs are impossible.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memtune.core.scenario import Scenario, load_scenario
from memtune.live.compare import TARGETS, ValidateConfig, compare_figures, measured_latencies, scaled
from memtune.live.driver import SimDriver
from memtune.live.linux import LinuxDriver, LiveOptions
from memtune.live.safety import unavailable
from memtune.policies import apply_policy, list_presets, load_policy

KSM_KNOBS = {"ksm.pages_to_scan": 1000, "ksm.sleep_millisecs": 20}
LINUX = {"memtune.sharing": "ksm", "memtune.compression": "zram", "memtune.host_victims": "cold",
         **KSM_KNOBS}
TABLE_FIGURES = ("shared_saved", "compressed", "swapped", "ballooned", "faults", "stall", "mean_latency")


def tuned_policy(s: Scenario, budget: int) -> Any:
    """The best policy ``memtune optimize`` finds for the scaled scenario (stall, simulator)."""
    from memtune.tuner.config import TuneConfig
    from memtune.tuner.job import tune
    from memtune.tuner.objective import Objective

    with tempfile.TemporaryDirectory() as out:
        cfg = TuneConfig(scenario=s, budget=budget, batch=4, repeats=1, initial_points=8, fidelity="full",
                         objective=Objective("stall"), presets=("esxi-default",))
        report = tune(cfg, out, plots=False)
        return load_policy(str(Path(out) / "best-policy.toml")), report


def with_settings(s: Scenario, settings: dict[str, Any]) -> Scenario:
    return s.replace(settings={**s.settings, **settings})


def real_runs(name: str, pol: str, s: Scenario, seeds: tuple[int, ...], live: LinuxDriver) -> list[dict]:
    """One real run per seed, each with the load average (1 min) before and after it."""
    out = []
    for seed in seeds:
        t0, load0 = time.monotonic(), os.getloadavg()[0]
        r = live.run(s, seed=seed)
        r["load"] = [load0, os.getloadavg()[0]]
        out.append(r)
        print(f"{name} {pol} seed {seed}: real {time.monotonic() - t0:.0f} s, load {load0:.1f} -> "
              f"{r['load'][1]:.1f}", file=sys.stderr, flush=True)
    return out


def row(s: Scenario, seeds: tuple[int, ...], real: list[dict]) -> dict[str, Any]:
    model = [SimDriver().run(s, seed=seed)["figures"] for seed in seeds]
    return {
        "figures": compare_figures(model, [r["figures"] for r in real]),
        "oom_killed": [r["figures"]["oom_killed"] for r in real],
        "limit_waits": [r["figures"].get("limit_waits", {}) for r in real],
        "load": [r["load"] for r in real],
        "cpu_wait": [sum(v.get("cpu_wait", 0.0) for v in r["vms"]) for r in real],
        "scaled": s.description,
    }


def run_scenario(name: str, cfg: ValidateConfig, budget: int, live: LinuxDriver,
                 calibration: dict[str, float]) -> dict[str, Any]:
    """esxi-default runs on the host first: its workers' guest swap-in latency joins the calibration
    of every model run and of the tuner's search on this scenario."""
    sc = load_scenario(name)
    scen = {p: with_settings(scaled(apply_policy(load_policy(p), sc), cfg), {**LINUX, **calibration})
            for p in list_presets()}
    first = real_runs(name, "esxi-default", scen["esxi-default"], cfg.seeds, live)
    # no guest swap-in in those runs: the guest swap file is on the device calibrate timed
    read = calibration.get("latency.swap_in_ssd")
    measured = {**({"latency.guest_swap_in": read} if read else {}), **measured_latencies(first)}
    scen = {p: with_settings(s, measured) for p, s in scen.items()}
    best, _ = tuned_policy(scen["esxi-default"], budget)
    scen["tuned"] = apply_policy(best, scen["esxi-default"])
    rows = {"esxi-default": row(scen["esxi-default"], cfg.seeds, first)}
    for pol, s in scen.items():
        if pol != "esxi-default":
            rows[pol] = row(s, cfg.seeds, real_runs(name, pol, s, cfg.seeds, live))
    rank = {
        side: sorted(rows, key=lambda p: rows[p]["figures"]["stall"][side]["mean"])
        for side in ("model", "real")
    }
    return {"measured_latencies": measured, "policies": rows, "ranking_by_stall": rank}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scen, r in result.items():
        for pol, rw in r["policies"].items():
            for fig in TARGETS:
                f = rw["figures"][fig]
                out[f"{scen}/{pol}/{fig}"] = {"ratio": f["ratio"], "met": f["met"]}
    if "small" in result:
        p = result["small"]["policies"]
        tuned, default = p["tuned"]["figures"]["stall"], p["esxi-default"]["figures"]["stall"]
        side = {k: tuned[k]["mean"] / max(default[k]["mean"], 1e-12) for k in ("model", "real")}
        out["small/tuned_vs_default_stall"] = {**side, "target": 0.6, "met": side["real"] <= 0.6}
    return out


def calibrate_host(swap_dir: str) -> dict[str, float]:
    """``memtune calibrate --device SWAP_DIR``: fault, copy, decompression and swap-device latencies."""
    from memtune.calibrate import calibrate

    return dict(calibrate(device=swap_dir).settings)


def run(
    scenarios: str = "small,db,vdi", seeds: str = "1,2", duration: float = 30.0, budget: int = 24
) -> dict:
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    cfg = ValidateConfig(duration=duration, seeds=tuple(int(x) for x in seeds.split(",")))
    opts = LiveOptions(lock_timeout=1800)
    live = LinuxDriver(opts)
    calibration = calibrate_host(opts.swap_dir)
    result = {name: run_scenario(name, cfg, budget, live, calibration) for name in scenarios.split(",")}
    return {
        "config": {"duration": duration, "seeds": list(cfg.seeds), "tuner_budget": budget, "linux": LINUX,
                   "calibration": calibration, "cpus": os.cpu_count()},
        "scenarios": result,
        "targets": targets(result),
    }


def _cell(fig: str, f: dict[str, Any]) -> str:
    unit = {"faults": 1e3, "stall": 1.0, "mean_latency": 1e-6}.get(fig, 2**20)
    m, r = f["model"]["mean"] / unit, f["real"]["mean"] / unit
    return f"{m:.3g} / {r:.3g} (±{f['real']['sd'] / unit:.2g})"


def table(data: dict[str, Any]) -> str:
    """The markdown tables of docs/live.md: model / real per figure, ranking, targets."""
    heads = {"shared_saved": "shared_saved (MiB)", "compressed": "compressed (MiB)",
             "swapped": "swapped (MiB)", "ballooned": "ballooned (MiB)", "faults": "faults (k)",
             "mean_latency": "mean_latency (us)"}
    lines = ["| scenario | policy | " + " | ".join(heads.get(f, f) for f in TABLE_FIGURES) + " | load |",
             "|---" * (len(TABLE_FIGURES) + 3) + "|"]
    for scen, r in data["scenarios"].items():
        for pol, rw in r["policies"].items():
            loads = [x for pair in rw["load"] for x in pair]
            cells = [_cell(f, rw["figures"][f]) for f in TABLE_FIGURES]
            load = f" | {min(loads):.1f}-{max(loads):.1f} |"
            lines.append(f"| {scen} | {pol} | " + " | ".join(cells) + load)
    lines += ["", "Ranking by stall (best first):", "", "| scenario | model | real |", "|---|---|---|"]
    for scen, r in data["scenarios"].items():
        rk = r["ranking_by_stall"]
        lines.append(f"| {scen} | {', '.join(rk['model'])} | {', '.join(rk['real'])} |")
    t = data["targets"]
    met = {f: sum(1 for k, v in t.items() if k.endswith("/" + f) and v["met"]) for f in TARGETS}
    n = {f: sum(1 for k in t if k.endswith("/" + f)) for f in TARGETS}
    lines += ["", "Targets met (cases): " + ", ".join(f"{f} {met[f]}/{n[f]}" for f in TARGETS)]
    if "small/tuned_vs_default_stall" in t:
        s = t["small/tuned_vs_default_stall"]
        lines.append(f"small: tuned / esxi-default stall: real {s['real']:.2f}, model {s['model']:.2f} "
                     f"(target <= 0.6: {'met' if s['met'] else 'not met'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="small,db,vdi")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--out", default="benchmarks/results/validate.json")
    ap.add_argument("--table", metavar="JSON", help="print the markdown tables of a result file and stop")
    args = ap.parse_args(argv)
    if args.table:
        try:
            data = json.loads(Path(args.table).read_text())
        except (OSError, ValueError) as exc:
            print(f"{args.table}: cannot read a validate result ({exc})", file=sys.stderr)
            return 2
        if "scenarios" not in data:
            print(f"{args.table}: no 'scenarios' (skipped run: {data.get('skipped')})", file=sys.stderr)
            return 2
        print(table(data))
        return 0
    figures = run(args.scenarios, args.seeds, args.duration, args.budget)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures.get("targets", figures), indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
