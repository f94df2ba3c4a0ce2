"""What a run reports: esxtop-style amounts per VM and for the host, latency, states, timeline.

All amounts are bytes, all times seconds, all fractions 0..1, so JSON consumers and Prometheus
metrics use one set of units. Column names follow esxtop's memory screen where one exists
(MEMSZ, TCHD/active, SHRD, SHRDSVD, ZERO, MCTLSZ, ZIP, SWCUR, OVHD).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from memtune.core.memstate import STATE_NAMES
from memtune.core.pages import FREE, RESIDENT

if TYPE_CHECKING:
    from memtune.core.host import Host


def vm_amounts(h: Host) -> dict[str, np.ndarray]:
    """Per-VM amounts in bytes: the esxtop memory columns and every plugin page state."""
    pb = float(h.page_bytes)
    counts = h.pages.counts
    mapped = h.states.mask(lambda s: s.mapped)
    out: dict[str, np.ndarray] = {
        "memsz": h.vm_pages * pb,
        "target": h.targets * pb,
        "granted": counts[:, : len(mapped)][:, mapped].sum(axis=1) * pb,
        "consumed": h.held() * pb,
        "active": h.sampler.estimate * h.vm_pages * pb * h.powered,
        "resident": counts[:, RESIDENT] * pb,
        "overhead": h.overhead * h.powered,
    }
    for info in h.states:
        if info.code in (FREE, RESIDENT):
            continue
        out[info.name] = counts[:, info.code] * pb
    for cols in h.hook.memtune_vm_columns(host=h):
        for k, v in (cols or {}).items():
            out[k] = np.asarray(v, dtype=np.float64)
    if "shared_consumed" in out:
        out["consumed"] = out["consumed"] + out["shared_consumed"]
    return out


class Timeline:
    """Amounts sampled every report interval, for plots and dashboards."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.t: list[float] = []
        self.free: list[float] = []
        self.state: list[str] = []
        self.vm: dict[str, list[list[float]]] = {}

    def record(self) -> None:
        h = self.host
        if self.t and self.t[-1] == h.now:
            return
        self.t.append(h.now)
        self.free.append(h.free_bytes())
        self.state.append(h.state.label)
        for k, v in vm_amounts(h).items():
            if k in ("memsz", "overhead"):
                continue
            self.vm.setdefault(k, []).append([float(x) for x in v])

    def as_dict(self) -> dict[str, Any]:
        return {"t": self.t, "free": self.free, "state": self.state, "vm": self.vm}


def build_result(h: Host, timeline: Timeline) -> dict[str, Any]:
    """The run's report as plain JSON-able data."""
    book = h.book
    amounts = vm_amounts(h)
    mean = book.mean_extra()
    p99 = book.quantile(0.99)
    stall = book.stall_fraction()
    vms = []
    for i, name in enumerate(h.vm_names):
        row: dict[str, Any] = {"name": name, "powered": bool(h.powered[i])}
        for k, v in amounts.items():
            row[k] = float(v[i])
        row.update({
            "touches": float(book.touches[i]),
            "mean_latency": float(mean[i]),
            "p99_latency": float(p99[i]),
            "stall": float(stall[i]),
            "faults": {k: float(v[i]) for k, v in sorted(book.faults.items())},
            "counters": {k: float(v[i]) for k, v in sorted(h.counters.items())},
            "shares": float(h.shares[i]),
            "reservation": float(h.reservation[i] * h.page_bytes),
            "limit": float(h.limit[i] * h.page_bytes),
        })
        vms.append(row)
    total_touch = book.touches.sum()
    host_hist = book.hist.sum(axis=0)
    running = book.running
    host = {
        "memory": float(h.memory),
        "min_free": float(h.min_free),
        "free": float(h.free_bytes()),
        "page_bytes": h.page_bytes,
        "overhead": float(h.overhead_bytes),
        "reserved": float((h.reservation * h.page_bytes)[h.powered].sum()),
        "state": h.state.label,
        "states_visited": list(h.states_visited),
        "time_in_state": {STATE_NAMES[i]: float(t) for i, t in enumerate(h.time_in_state)},
        "mean_latency": float(book.extra.sum() / total_touch) if total_touch else 0.0,
        "p99_latency": float(book.quantile(0.99, host_hist)[0]),
        "stall": float(np.minimum(book.stall, running).sum() / running.sum()) if running.sum() else 0.0,
        "large_pages_broken": h.large_pages_broken,
        "pools": {k: float(v) * h.page_bytes for k, v in h.host_pools.items()},
        "totals": {k: float(v.sum()) for k, v in amounts.items()},
    }
    return {
        "scenario": h.scenario.name,
        "seed": h.seed,
        "duration": float(h.now),
        "tick": h.scenario.tick,
        "warmup": h.scenario.warmup,
        "plugins": h.pm.plugin_names(),
        "settings": {k: v for k, v in h.settings.items()},
        "host": host,
        "vms": vms,
        "timeline": timeline.as_dict(),
    }
