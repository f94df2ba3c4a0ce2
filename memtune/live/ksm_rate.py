"""ksmd's per-page costs as this host delivered them in live runs (``memtune.ksm_page_cost``,
``memtune.ksm_tree_cost``), fitted to the ``pages_scanned`` the runs recorded each tick.

ksmd's rate is the model's ``pages_to_scan`` per batch of ``sleep + pages_to_scan x (page_cost +
share x tree_cost)`` (``memtune.plugins.ksm_scan.KSMState.batch_period``). Its first full scan
only checksums (share 0), which gives ``page_cost``; scans from the third on give ``tree_cost``
from the share of visits that search the trees, taken as the unstable tree's share of ksmd's
rmap_items (``pages_unshared`` / (``pages_volatile`` + ``pages_unshared`` + ``pages_shared`` +
``pages_sharing``); in the second scan these counts still lag the visits). On a loaded 2-core
host ksmd (nice 5) gets what CPU is left, so the costs are the run's, not the kernel's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_SHARE = 0.05        # below this the later scans say little about the tree cost


def _slope(t: np.ndarray, y: np.ndarray) -> float | None:
    if t.size < 2 or np.ptp(t) <= 0:
        return None
    return float(np.polyfit(t, y, 1)[0])


def scan_rates(timeline: dict[str, list]) -> tuple[float | None, float | None, float]:
    """(pages/s in the first full scan, pages/s after it, tree share after it) of one live run."""
    rows = timeline.get("ksm") or []
    if len(rows) < 3:
        return None, None, 0.0
    t = np.asarray(timeline["t"][: len(rows)], dtype=float)
    names = ("pages_scanned", "full_scans", "pages_volatile", "pages_unshared", "pages_shared",
             "pages_sharing")
    col = {k: np.array([r.get(k, 0) for r in rows], dtype=float) for k in names}
    first = col["full_scans"] == col["full_scans"][0]
    r1 = _slope(t[first], col["pages_scanned"][first])
    later = col["full_scans"] >= col["full_scans"][0] + 2      # counts settled: a stock for a flow
    r2 = _slope(t[later], col["pages_scanned"][later]) if later.sum() >= 3 else None
    items = col["pages_volatile"] + col["pages_unshared"] + col["pages_shared"] + col["pages_sharing"]
    share = float(np.mean(col["pages_unshared"][later] / np.maximum(items[later], 1))) if later.any() else 0.0
    return r1, r2, share


def batch_sleep(settings: dict[str, Any]) -> float:
    """ksmd's sleep between batches: whole jiffies, rounded up, and the wake-up on the next one."""
    jiffy = float(settings["memtune.ksm_jiffy"])
    sleep = int(settings["ksm.sleep_millisecs"]) / 1000.0
    return (np.ceil(sleep / jiffy - 1e-9) + 1) * jiffy if jiffy > 0 else sleep


def fitted_costs(runs: list[dict[str, Any]]) -> dict[str, float]:
    """``memtune.ksm_page_cost`` / ``ksm_tree_cost`` fitted to the live runs (result dicts of
    :class:`memtune.live.linux.LinuxDriver`, whose ``host["ksm_settings"]`` are the run's KSM
    settings); empty where the runs did not use the model's KSM mode with fixed knobs, or recorded
    too little (the model keeps its settings)."""
    settings = runs[0].get("host", {}).get("ksm_settings", {}) if runs else {}
    if (settings.get("memtune.sharing") != "ksm" or not int(settings.get("ksm.run", 0))
            or settings.get("ksmtuned.enabled")):
        return {}
    n = int(settings["ksm.pages_to_scan"])
    sleep = batch_sleep(settings)
    per1, per2, shares = [], [], []
    for run in runs:
        r1, r2, share = scan_rates(run.get("timeline", {}))
        if r1 and r1 > 0:
            per1.append((n / r1 - sleep) / n)
        if r2 and r2 > 0 and share >= MIN_SHARE:
            per2.append((n / r2 - sleep) / n)
            shares.append(share)
    if not per1:
        return {}
    page = max(float(np.mean(per1)), 0.0)
    out = {"memtune.ksm_page_cost": page}
    if per2:
        out["memtune.ksm_tree_cost"] = max((float(np.mean(per2)) - page) / float(np.mean(shares)), 0.0)
    return out
