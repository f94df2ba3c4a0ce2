"""Linux KSM through its sysfs knobs (Documentation/admin-guide/mm/ksm.rst).

Knobs are written through the run's undo log, so every value is restored afterwards. Counters are
read as integers; ``general_profit`` is in bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memtune.live.state import HostState

KSM = Path("/sys/kernel/mm/ksm")
KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "max_page_sharing", "use_zero_pages",
         "merge_across_nodes", "smart_scan", "advisor_mode")
COUNTERS = ("full_scans", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "pages_scanned", "general_profit", "ksm_zero_pages", "stable_node_chains", "stable_node_dups")


def available() -> str | None:
    return None if (KSM / "run").exists() else f"no KSM at {KSM} (kernel built without CONFIG_KSM)"


def counters() -> dict[str, int]:
    out = {}
    for name in COUNTERS:
        p = KSM / name
        if p.exists():
            out[name] = int(p.read_text())
    return out


def in_use() -> str | None:
    """Why KSM looks in use by someone else (running, or pages still merged), or None."""
    run = int((KSM / "run").read_text())
    c = counters()
    if run == 1:
        return "KSM is running (run=1)"
    if c.get("pages_shared", 0) or c.get("pages_sharing", 0):
        return f"KSM holds merged pages (pages_sharing={c.get('pages_sharing')})"
    return None


def configure(st: HostState, **knobs: Any) -> None:
    """Set KSM knobs (names as in sysfs); ``run`` last so the scan starts with the new settings.

    ``merge_across_nodes`` can only change while no page is merged: it is skipped if unchanged."""
    order = [k for k in knobs if k != "run"] + (["run"] if "run" in knobs else [])
    for name in order:
        if name not in KNOBS:
            raise ValueError(f"unknown KSM knob {name!r}")
        path = KSM / name
        if not path.exists():
            continue
        if (path.read_text().strip()) == str(knobs[name]):
            continue
        st.write_sysfs(str(path), knobs[name])


def stop_and_unmerge(st: HostState) -> None:
    """``run=2``: stop ksmd and unmerge every merged page (used before restoring ``run``)."""
    st.write_sysfs(str(KSM / "run"), 2)
