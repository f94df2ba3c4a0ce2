"""The figures a model run and a real run are compared on, taken from either kind of result.

Bytes at the end of the run (shared-saved, compressed, compression cache, swapped, ballooned,
guest-swapped); swap-ins in 4 KiB pages after the warm-up (hypervisor swap, compression and the
guest's own swap); stall share and extra touch latency (mean, p99) after the warm-up; seconds in
each memory state after the warm-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memtune.core.latency import LatencyBook

FIGURES = ("shared_saved", "compressed", "compression_cache", "swapped", "ballooned", "guest_swapped",
           "faults", "stall", "mean_latency", "p99_latency")
FAULT_STATES = ("swapped", "compressed", "guest_swapped", "ballooned")


def sim_figures(result: dict[str, Any]) -> dict[str, Any]:
    host = result["host"]
    totals = host["totals"]
    faults = sum(v for row in result["vms"] for k, v in row["faults"].items() if k in FAULT_STATES)
    out = {k: float(totals.get(k, 0.0)) for k in FIGURES[:6]}
    out["shared_saved"] += float(totals.get("merged_saved", 0.0))     # the KSM mode's name for it
    out.update(faults=float(faults), stall=host["stall"], mean_latency=host["mean_latency"], oom_killed=[],
               p99_latency=host["p99_latency"], time_in_state=dict(host["time_in_state"]))
    return out


def quantile(hist: np.ndarray, q: float) -> float:
    book = LatencyBook(1)
    book.hist[0] = hist
    return float(book.quantile(q)[0])


def live_figures(final: dict[str, Any], workers: list[dict[str, Any]], faults: float,
                 time_in_state: dict[str, float]) -> dict[str, Any]:
    """Figures of a real run: ``final`` host amounts (bytes), worker statistics, major faults."""
    touches = sum(w["touches"] for w in workers)
    extra = sum(w["extra"] for w in workers)
    running = sum(w["elapsed"] for w in workers)
    hist = np.sum([w["hist"] for w in workers], axis=0)
    out = {k: float(final.get(k, 0.0)) for k in FIGURES[:6]}
    out.update(faults=float(faults), stall=min(extra / running, 1.0) if running else 0.0,
               mean_latency=extra / touches if touches else 0.0, p99_latency=quantile(hist, 0.99),
               time_in_state=dict(time_in_state))
    return out
