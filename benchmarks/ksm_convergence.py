"""KSM convergence, memtune against the kernel on this machine: the same pages, the same knobs.

Four 16 MiB VMs (4096 pages each) of one image: 10 % zero pages, 40 % image pages common to all,
10 % duplicates inside each VM (groups of 4), 40 % private data. memtune builds the host, and the
kernel run gets exactly those pages (each VM's content ids become a child process's page bytes, in
page order). Both runs use the same KSM knobs; memtune's per-page costs are set from the scan rates the
kernel showed (slopes of ``pages_scanned`` in its first full scan, which only checksums, and after
it), so the comparison is of the merging rules and the timing they imply, with the rates and the
default-cost prediction reported beside. Compared: the time (and scan progress) of the first
merge, of half and of all the final ``pages_sharing``, and the final counters.

Run: ``python -m benchmarks.ksm_convergence [--runs 3]`` (root; about 12 s a run; skips without KSM).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from benchmarks.ksm_kernel import COUNTERS, run_kernel, unavailable

MIX = {"zero": 0.1, "template": 0.4, "duplicate": 0.1, "unique": 0.4}
CONFIGS = {
    "defaults": {"pages_to_scan": 100, "sleep_millisecs": 20, "max_page_sharing": 256, "use_zero_pages": 0,
                 "smart_scan": 1},
    "zero-pages, max_page_sharing 3": {"pages_to_scan": 200, "sleep_millisecs": 20, "max_page_sharing": 3,
                                       "use_zero_pages": 1, "smart_scan": 1},
}
TICK = 0.05


def build(n_vms: int = 4, vm_mib: int = 16, knobs: dict | None = None, page_cost: tuple | None = None,
          mix: dict | None = None):
    """A memtune host with the VMs' pages all mapped, in KSM mode with ``knobs``."""
    from memtune.core.engine import Engine
    from memtune.core.pages import FREE, RESIDENT
    from memtune.core.plugins import build_plugin_manager
    from memtune.core.scenario import scenario_from_dict
    from memtune.core.simulation import build_host

    settings = {"memtune.sharing": "ksm", **{f"ksm.{k}": v for k, v in (knobs or {}).items()}}
    if page_cost is not None:
        settings["memtune.ksm_page_cost"], settings["memtune.ksm_tree_cost"] = page_cost
    wl = {"allocated": 1.0, "wss": 1.0, "touch_rate": 0.0, "write_fraction": 0.0,
          "content": mix or MIX, "duplicate_copies": 4}
    sc = scenario_from_dict({"name": "ksm-convergence", "duration": "60s", "tick": f"{TICK}s", "seed": 1,
                             "host": {"memory": "2 GiB", "page_scale": 1}, "settings": settings,
                             "workloads": {"w": wl},
                             "vm": [{"name": f"vm{i}", "memory": f"{vm_mib} MiB", "workload": "w",
                                     "image": "linux"} for i in range(n_vms)]}, "<ksm-convergence>")
    pm = build_plugin_manager(disable=["balloon", "compression", "swap", "audit"], entrypoints=False)
    host = build_host(sc, pm=pm)
    host.pages.set_state(np.flatnonzero(host.pages.state == FREE), RESIDENT)
    return host, Engine(host)


def vm_keys(host) -> list[np.ndarray]:
    pg = host.pages
    return [pg.content[pg.base[v]: pg.base[v] + pg.npages[v]].copy() for v in range(host.nvm)]


def run_model(
    knobs: dict,
    page_cost: tuple | None = None,
    seconds: float = 30.0,
    stop_sharing: float | None = None,
    settle: float = 1.0,
) -> dict:
    from memtune.plugins import ksm

    host, engine = build(knobs=knobs, page_cost=page_cost)
    samples = []
    done = None
    while host.now < seconds:
        engine.step(TICK)
        c = ksm.counters(host)
        samples.append([round(host.now, 4)] + [c.get(n, 0) for n in COUNTERS])
        if stop_sharing is not None and done is None and c["pages_sharing"] >= stop_sharing:
            done = host.now
        if done is not None and host.now - done >= settle:
            break
    return {"columns": ["t", *COUNTERS], "samples": samples}


def milestones(run: dict) -> dict:
    """Time and pages scanned at the first merge, half and all of the final pages_sharing."""
    s = np.array(run["samples"], dtype=float)
    cols = run["columns"]
    t, sharing, scanned = s[:, 0], s[:, cols.index("pages_sharing")], s[:, cols.index("pages_scanned")]
    final = sharing[-1]
    out = {"final": {c: float(s[-1, i]) for i, c in enumerate(cols) if c != "t"}}
    for name, level in (("first", 1.0), ("half", final / 2), ("all", final)):
        i = int(np.argmax(sharing >= level)) if final >= level and final > 0 else -1
        out[name] = {"t": float(t[i]) if i >= 0 else None, "scanned": float(scanned[i]) if i >= 0 else None}
    return out


def scan_rates(run: dict) -> tuple[float, float]:
    """4 KiB pages per second the kernel's ksmd visited (slopes of pages_scanned): during its first
    full scan (checksums only) and after it (tree searches and merges)."""
    s = np.array(run["samples"], dtype=float)
    cols = run["columns"]
    t, sc, fs = s[:, 0], s[:, cols.index("pages_scanned")], s[:, cols.index("full_scans")]
    first = (t > 0.3) & (fs == 0)
    later = fs >= 1
    r1 = float(np.polyfit(t[first], sc[first], 1)[0])
    r2 = float(np.polyfit(t[later], sc[later], 1)[0]) if later.sum() >= 3 else r1
    return r1, r2


def scan_rate(run: dict) -> float:
    """Mean pages per second over the run."""
    s = np.array(run["samples"], dtype=float)
    cols = run["columns"]
    t, sc = s[:, 0], s[:, cols.index("pages_scanned")]
    m = t > 0.3
    return float(np.polyfit(t[m], sc[m], 1)[0])


def page_cost_for(rates: tuple[float, float], knobs: dict, jiffy: float = 0.004) -> tuple[float, float]:
    """(memtune.ksm_page_cost, memtune.ksm_tree_cost) that give the kernel's two scan rates: the
    first scan's visits only checksum; later visits search the trees (taken as all of them)."""
    n = knobs["pages_to_scan"]
    sleep = (np.ceil(knobs["sleep_millisecs"] / 1000 / jiffy - 1e-9) + 1) * jiffy
    c1 = max(0.0, (n / rates[0] - sleep) / n)
    c2 = max(0.0, (n / rates[1] - sleep) / n - c1)
    return c1, c2


def compare(name: str, knobs: dict) -> dict:
    host, _ = build(knobs=knobs)
    model_default = run_model(knobs, seconds=40.0)
    expect = milestones(model_default)["final"]["pages_sharing"]
    kernel = run_kernel(vm_keys(host), knobs, timeout=40.0, expect_sharing=int(expect), settle=0.5)
    if "skipped" in kernel:
        return {"skipped": kernel["skipped"]}
    rates = scan_rates(kernel)
    cost = page_cost_for(rates, knobs)
    model = run_model(knobs, page_cost=cost, seconds=40.0, stop_sharing=expect, settle=0.5)
    rate = scan_rate(kernel)
    km, mm = milestones(kernel), milestones(model)
    predicted_rate = knobs["pages_to_scan"] / host.plugin_data["ksm"].batch_period(host)
    return {
        "config": name,
        "knobs": knobs,
        "kernel_rate": round(rate, 1),
        "kernel_rates_first_later": [round(r, 1) for r in rates],
        "fitted_costs_us": [round(c * 1e6, 2) for c in cost],
        "model_default_rate": round(float(predicted_rate), 1),
        "kernel": km,
        "model": mm,
        "model_default_costs": milestones(model_default),
    }


def run(runs: int = 3) -> dict:
    why = unavailable()
    if why:
        return {"skipped": why}
    out: dict = {"runs": []}
    for _ in range(runs):
        for name, knobs in CONFIGS.items():
            out["runs"].append(compare(name, knobs))
    out["summary"] = summarise(out["runs"])
    return out


def summarise(runs: list[dict]) -> dict:
    """Per config and milestone: kernel and model times (mean, min, max) and the relative gap."""
    summary: dict = {}
    for r in runs:
        if "skipped" in r:
            continue
        cfg = summary.setdefault(r["config"], {"kernel_rate": []})
        cfg["kernel_rate"].append(r["kernel_rate"])
        for m in ("first", "half", "all"):
            k, s = r["kernel"][m]["t"], r["model"][m]["t"]
            d = r["model_default_costs"][m]["t"]
            e = cfg.setdefault(m, {"kernel_t": [], "model_t": [], "gap": [], "model_default_t": []})
            if k is not None and s is not None:
                e["kernel_t"].append(round(k, 3))
                e["model_t"].append(round(s, 3))
                e["gap"].append(round((s - k) / k, 4))
                e["model_default_t"].append(None if d is None else round(d, 3))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/ksm_convergence.json")
    args = ap.parse_args(argv)
    res = run(args.runs)
    print(json.dumps(res.get("summary", res), indent=2))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
