"""ksmd's per-page cost as this host delivered it in live runs (``memtune.ksm_page_cost``), fitted to
the ``pages_scanned`` the runs recorded each tick.

ksmd's rate is the model's ``pages_to_scan`` per batch of ``sleep + pages_to_scan x (page_cost +
share x tree_cost)`` (``memtune.plugins.ksm_scan.KSMState.batch_period``). Its first full scan only
checksums (share 0), so that scan's rate gives ``page_cost``. ``tree_cost`` is not fitted: the
share of visits that search the trees is not a counter, and estimating it from the stocks
(``pages_unshared`` over ksmd's rmap_items) gave tree costs of 21-386 us that made the model scan
0.60 of the kernel's pages on scaled ``db`` (the default 55 us with the fitted page cost: 0.93-1.09
on ``small``, ``db`` and ``vdi``). On a loaded 2-core host ksmd (nice 5) gets what CPU is left, so
the cost is the run's, not the kernel's.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _slope(t: np.ndarray, y: np.ndarray) -> float | None:
    if t.size < 2 or np.ptp(t) <= 0:
        return None
    return float(np.polyfit(t, y, 1)[0])


def first_scan_rate(timeline: dict[str, list]) -> float | None:
    """Pages per second in the first full scan of one live run (None if it recorded too little)."""
    rows = timeline.get("ksm") or []
    if len(rows) < 2:
        return None
    t = np.asarray(timeline["t"][: len(rows)], dtype=float)
    scanned = np.array([r.get("pages_scanned", 0) for r in rows], dtype=float)
    scans = np.array([r.get("full_scans", 0) for r in rows], dtype=float)
    first = scans == scans[0]
    return _slope(t[first], scanned[first])


def batch_sleep(settings: dict[str, Any]) -> float:
    """ksmd's sleep between batches: whole jiffies, rounded up, and the wake-up on the next one."""
    jiffy = float(settings["memtune.ksm_jiffy"])
    sleep = int(settings["ksm.sleep_millisecs"]) / 1000.0
    return (np.ceil(sleep / jiffy - 1e-9) + 1) * jiffy if jiffy > 0 else sleep


def fitted_costs(runs: list[dict[str, Any]]) -> dict[str, float]:
    """``memtune.ksm_page_cost`` fitted to the live runs (result dicts of
    :class:`memtune.live.linux.LinuxDriver`, whose ``host["ksm_settings"]`` are the run's KSM
    settings): the mean over the runs of the time a page took in the first full scan, beyond the
    sleep. Empty where the runs did not use the model's KSM mode with fixed knobs, or recorded too
    little (the model keeps its settings)."""
    settings = runs[0].get("host", {}).get("ksm_settings", {}) if runs else {}
    if (settings.get("memtune.sharing") != "ksm" or not int(settings.get("ksm.run", 0))
            or settings.get("ksmtuned.enabled")):
        return {}
    n = int(settings["ksm.pages_to_scan"])
    sleep = batch_sleep(settings)
    per_page = [(n / r - sleep) / n for r in (first_scan_rate(run.get("timeline", {})) for run in runs)
                if r and r > 0]
    if not per_page:
        return {}
    return {"memtune.ksm_page_cost": max(float(np.mean(per_page)), 0.0)}
