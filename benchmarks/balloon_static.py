"""Ballooned against static memory, Waldspurger 2002 Fig. 2's setup, on the model.

The paper ran dbench (40 clients) in a Linux VM configured with 256 MB and ballooned down to S, and
in a VM configured with S, for S = 128 .. 256 MB: the ballooned VM's throughput stayed within a few
percent of the static one (the paper reports the gap at 1.4 % to 4.4 %), lower because the guest
sizes kernel structures by its configured memory, so a ballooned 256 MB guest has a little less
room than a 128 MB one.

Here both VMs run the same guest workload, its demand given in bytes: 300 MiB in use (of which 200
MiB page cache, the coldest end), a 96 MiB hot set taking 90 % of touches, 20 000 touches/s, 30 %
writes. The static VM (configured S) holds what fits and pages the rest to its own disk (guest
memory model, docs/model.md); the ballooned VM (configured 256 MiB) gets a balloon of 256 - S MiB
through its limit (``sched.mem.max`` = S minus the guest kernel's structures for 256 MiB, which the
balloon cannot take). ``memtune.guest_kernel_share`` is 1.56 % (Linux: a 64-byte struct page per 4
KiB page). Throughput is taken as the share of time not stalled, (1 - stall); the figure compared is
ballooned / static throughput, over 3 seeds. Ticks are 1 s: a guest swapping against its balloon
refaults pages within a round of touch draws, and at 5 s ticks with 10 s touch spans the engine
counts a page's faults once per round, 6-8 % fewer than the steady rate (128 MiB: stall 0.175 at 5 s,
0.188 at 1 s, against 0.188 from the touch law).

Run: ``python -m benchmarks.balloon_static`` (about a minute).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import simulate

MIB = 1 << 20
CONFIGURED = 256
SIZES = (128, 160, 192, 224)
KERNEL = 64 / 4096
SEEDS = (1, 2, 3)
WORKLOAD = {"allocated": "300 MiB", "wss": "96 MiB", "cache": "200 MiB", "hot_share": 0.9,
            "touch_rate": 20000, "write_fraction": 0.3, "content": {"zero": 0.0, "unique": 1.0}}
PAPER = {"source": "Waldspurger, OSDI 2002, s.3.2, Fig. 2 (dbench, 40 clients, Linux VM, 256 MB)",
         "ballooned_vs_static_gap": [0.014, 0.044]}


def _run(memory_mib: int, limit: int | None, seed: int) -> dict[str, float]:
    vm: dict[str, Any] = {"name": "vm", "memory": f"{memory_mib} MiB", "workload": WORKLOAD}
    if limit is not None:
        vm["limit"] = limit
    sc = scenario_from_dict(
        {
            "name": f"fig2-{memory_mib}",
            "duration": "10m",
            "warmup": "4m",
            "tick": "1s",
            "seed": seed,
            "host": {"memory": "4 GiB", "page_scale": 4},
            "settings": {"memtune.guest_kernel_share": KERNEL, "memtune.touch_interval": 1.0},
            "vm": [vm],
        },
        "<balloon-static>",
    )
    pm = build_plugin_manager(disable=["compression", "audit", "encryption"], entrypoints=False)
    r = simulate(sc, pm=pm)
    v = r["vms"][0] if isinstance(r.get("vms"), list) else r["vms"]["vm"]
    return {"stall": float(v["stall"]), "ballooned_mib": float(v.get("ballooned", 0.0)) / MIB}


def run() -> dict[str, Any]:
    rows = []
    for s in SIZES:
        limit = int((s - CONFIGURED * KERNEL) * MIB) // 4096 * 4096
        stat = [_run(s, None, seed) for seed in SEEDS]
        ball = [_run(CONFIGURED, limit, seed) for seed in SEEDS]
        ts = np.array([1 - x["stall"] for x in stat])
        tb = np.array([1 - x["stall"] for x in ball])
        ratio = tb / ts
        rows.append(
            {
                "size_mib": s,
                "static_throughput": round(float(ts.mean()), 4),
                "ballooned_throughput": round(float(tb.mean()), 4),
                "ratio_mean": round(float(ratio.mean()), 4),
                "ratio_sd": round(float(ratio.std(ddof=1)), 4),
                "balloon_mib": round(float(np.mean([x["ballooned_mib"] for x in ball])), 1),
            }
        )
    full = [_run(CONFIGURED, None, seed) for seed in SEEDS]
    return {
        "rows": rows,
        "full_256_throughput": round(float(np.mean([1 - x["stall"] for x in full])), 4),
        "paper": PAPER,
        "kernel_share": KERNEL,
    }


def main() -> int:
    res = run()
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
