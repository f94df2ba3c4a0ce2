"""The result of a live run: per-VM rows, the host's amounts at the end and the figures common to
model and real runs (:mod:`memtune.live.figures`), from the workers' statistics and the counters
read at the end of the warm-up and at the end of the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from memtune.core.latency import NB
from memtune.live.figures import quantile
from memtune.live.measure import Sample

PAGE = 4096


def read_stats(path: Path) -> dict[str, Any]:
    """A worker's statistics; an OOM-killed worker wrote none (its touches are lost, not zero)."""
    if path.exists():
        return json.loads(path.read_text())
    return {
        "touches": 0.0,
        "timed": 0,
        "dropped_preempted": 0,
        "extra": 0.0,
        "hist": [0.0] * NB,
        "elapsed": 0.0,
        "guest_swap_ins": 0,
        "guest_swap_outs": 0,
        "first_touches": 0,
        "balloon": 0,
        "oom_killed": True,
    }


def vm_row(name: str, stats: dict, snap: dict, a: dict, b: dict, gin: int, base: int) -> dict:
    """One VM's figures: ``a``/``b`` its cgroup counters after the warm-up and at the end."""
    pa, pb = a["pressure"], b["pressure"]
    el = max(stats["elapsed"], 1e-9)
    return {
        "name": name,
        "touches": stats["touches"],
        "timed": stats["timed"],
        "dropped_preempted": stats["dropped_preempted"],
        "mean_latency": stats["extra"] / stats["touches"] if stats["touches"] else 0.0,
        "p99_latency": quantile(np.array(stats["hist"]), 0.99),
        "stall": min(stats["extra"] / el, 1.0),
        "major_faults": b["pgmajfault"] - a["pgmajfault"],
        "guest_swap_ins": gin,
        "ballooned": snap["ballooned"] * PAGE,
        "guest_swapped": (snap["guest_swap_outs"] - snap["guest_swap_ins"]) * PAGE,
        "extra_by_cause": stats.get("extra_by_cause", {}),
        "cpu_wait": stats.get("cpu_wait", 0.0),     # run-queue seconds kept out of the latencies
        "host_paged": snap.get("host_paged", 0) * PAGE,   # paged out for the host (hard/low state)
        "psi_some": (pb.get("some", 0) - pa.get("some", 0)) / el if pb else None,
        "psi_full": (pb.get("full", 0) - pa.get("full", 0)) / el if pb else None,
        "swap": b["swap"],
        "rss": b["rss"],
        "baseline": base,
        "oom_killed": stats.get("oom_killed", False),
    }


def final_amounts(s: Sample, snap: list[dict], host_swap: str) -> dict[str, float]:
    """Host amounts at the end (bytes): KSM's saving, zram's content and footprint, the swap
    file's use, balloons, and, as the model counts it, guest-swapped: pages given back with their
    data on the guest's disk beyond those the balloon holds (its in-use pages paged out)."""
    return {
        "shared_saved": s.ksm.get("pages_sharing", 0) * PAGE,
        "compressed": s.zram.get("orig_data_size", 0),
        "compression_cache": s.zram.get("mem_used_total", 0),
        "swapped": s.swaps.get(host_swap, {}).get("used", 0),
        "ballooned": sum(x["ballooned"] for x in snap) * PAGE,
        "guest_swapped": sum(
            max(0, x["guest_swap_outs"] - x["guest_swap_ins"] - (x["ballooned"] - x["free_taken"]))
            for x in snap
        )
        * PAGE,
    }


def vm_rows(names: list[str], stats: list[dict], snap: list[dict], warm: dict, end: dict,
            baseline: list[int], held: list[int]) -> tuple[list[dict], float]:
    """Rows of every VM and the faults after the warm-up (cgroup major faults + guest swap-ins)."""
    rows, faults = [], 0.0
    for v, name in enumerate(names):
        gin = end["guest_swap_ins"][v] - warm["guest_swap_ins"][v]
        row = vm_row(name, stats[v], snap[v], warm["vms"][v], end["vms"][v], gin, baseline[v])
        faults += row["major_faults"] + gin
        rows.append({**row, "held": held[v]})
    return rows, faults
