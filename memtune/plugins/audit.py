"""Audit log: a tamper-evident, append-only record of what the memory manager did and to whom.

Written only against the public hooks. With the setting ``audit.log`` set, every run appends JSON
lines (format in :mod:`memtune.audit`) to that file:

- as they happen: ``policy`` (the engine's settings and per-VM knobs at start), ``state-change``,
  ``admission-refused``, ``large-pages-broken``, ``anomaly``, and any other kind a plugin emits;
- once per sampling period (``Mem.SamplePeriod``), per VM: ``reclaim`` (change of the pages in every
  plugin page state -- ballooned, compressed, swapped, shared ... looked up by name through
  ``host.states`` -- and of ``host.counters``), ``cow-break``, ``share`` and plugin-reported
  ``reclaim`` events summed per VM and per text field such as ``technique`` (numbers inside per-VM
  tables are summed too); if a run has no ``share`` events at all, host-wide ``share`` records
  (``derived``) from the pages in state ``shared`` and the ``tps`` host pool, when they change;
- anomalies: ``leak-suspect`` (a VM whose consumed memory -- ``host.held()`` -- grows steadily for
  ``audit.leak_periods`` periods while its active memory -- ``host.sampler.estimate`` -- does not)
  and ``cow-storm`` (COW breaks per second over a period above ``audit.cow_storm_rate``). Both are
  emitted with ``host.emit("anomaly", vm, anomaly=...)`` so other plugins see them too, and are
  recorded once when they begin (again only after they cleared).

Records are queued and written at most once per tick with ``flush`` + ``fsync``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from memtune import __version__
from memtune.audit.chain import jsonable, load_key
from memtune.audit.writer import AuditWriter
from memtune.plugin import Setting, hookimpl, settings_hook

NAME = "audit"
AGGREGATED = ("cow-break", "share", "reclaim")
COW_COUNT_KEYS = ("breaks", "cow_breaks", "count", "pages")

SETTINGS = (
    Setting(
        "audit.log",
        "str",
        "",
        "Append the hash-chained audit log (JSON lines) to this file (relative to the working "
        "directory); empty = off.",
        "memtune: off unless asked, so runs write no files by default",
    ),
    Setting(
        "audit.key_file",
        "str",
        "",
        "File holding the HMAC-SHA-256 key for the log (else $MEMTUNE_AUDIT_KEY; neither = plain SHA-256).",
        "RFC 2104 HMAC: without the key an edited log cannot be re-hashed to look intact",
    ),
    Setting(
        "audit.leak_periods",
        "int",
        20,
        "Sampling periods of steady consumed growth (with flat active memory) before a VM is a leak suspect.",
        "20 x Mem.SamplePeriod (60 s) = 20 min: measured in this model (constant workloads of 2k-50k "
        "touches/s, 3 seeds), first-touch warm-up of cold memory decays with e-folding times up to "
        "~15 min, so a shorter window cannot tell it from a steady leak",
        minimum=4,
    ),
    Setting(
        "audit.leak_min_rate",
        "float",
        0.05,
        "Least consumed growth, as a share of configured memory per hour, that counts as a leak.",
        "model choice: 5 %/h fills the typical 20-30 % guest headroom within a 4-6 h shift; slower "
        "growth is within what page-in of cold data looks like",
        minimum=0.0,
    ),
    Setting(
        "audit.leak_steady_ratio",
        "float",
        0.8,
        "Growth in the second half of the window must be at least this share of the first half.",
        "a leak grows at a constant rate (ratio ~1, measured 0.8-1.1 at 5-30 %/h); first-touch warm-up "
        "grows as 1 - exp(-t/T), ratio exp(-window/2T), measured below 0.8 for constant workloads",
        minimum=0.0,
        maximum=1.0,
    ),
    Setting(
        "audit.leak_active_share",
        "float",
        0.5,
        "Active memory may grow by at most this share of the consumed growth for a leak suspect.",
        "model choice: a leak is memory that is held but not used; if most of the growth is active "
        "it is a growing working set, not a leak",
        minimum=0.0,
        maximum=1.0,
    ),
    Setting(
        "audit.cow_storm_rate",
        "float",
        3333.0,
        "COW breaks per second (4 KiB pages, averaged over a sampling period) above which a VM is in a COW "
        "storm.",
        "a COW break costs ~3 us (fault + 4 KiB copy, latency.cow_break): 3333/s is 1 % of a vCPU",
        minimum=0.0,
    ),
)


memtune_register_settings = settings_hook(SETTINGS)


class AuditState:
    """Per-host state of the audit plugin (kept in ``host.plugin_data["audit"]``)."""

    def __init__(self, host: Any) -> None:
        self.path: str = host.settings["audit.log"]
        self.writer: AuditWriter | None = None
        self.early: list[tuple[float, str, str | None, dict]] = []
        nvm = host.nvm
        self.period = float(host.settings["Mem.SamplePeriod"])
        self.last_states = host.pages.counts.copy()
        self.last_counters: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.agg: dict[tuple, dict[str, Any]] = defaultdict(dict)
        self.agg_events: dict[tuple, int] = defaultdict(int)
        self.cow = np.zeros(nvm)
        self.share_events = 0  # share events seen this run (none: derive from states)
        self.last_share: tuple | None = None
        self.consumed: list[np.ndarray] = []
        self.active: list[np.ndarray] = []
        self.leaking = np.zeros(nvm, dtype=bool)
        self.storming = np.zeros(nvm, dtype=bool)
        self.period_start = 0.0
        self.clock: float | None = None  # time of the period being closed (host.now lags a tick)

    def record(self, time: float, kind: str, vm: str | None, data: dict) -> None:
        if self.writer is None:
            self.early.append((time, kind, vm, jsonable(data)))
        else:
            self.writer.add(time, kind, vm, data)


def _state(host: Any) -> AuditState | None:
    """The plugin's state, created on first use; None when the log is off."""
    if not host.settings.get("audit.log"):
        return None
    st = host.plugin_data.get(NAME)
    if st is None:
        st = host.plugin_data[NAME] = AuditState(host)
    return st


@hookimpl
def memtune_configure(host: Any) -> None:
    """Open the log (continuing an existing chain) and write the run's ``log-start`` record."""
    st = _state(host)
    if st is None:
        return
    key = load_key(host.settings["audit.key_file"] or None)
    st.writer = AuditWriter(st.path, key)
    st.writer.start(
        host.now,
        {
            "scenario": host.scenario.name,
            "seed": host.seed,
            "memtune": __version__,
            "vms": list(host.vm_names),
            "page_bytes": host.page_bytes,
            "plugins": sorted(host.pm.info),
            "sample_period": st.period,
        },
    )
    for rec in st.early:
        st.writer.add(*rec)
    st.early.clear()
    st.writer.commit()


def _vm_name(host: Any, vm: int | None) -> str | None:
    return None if vm is None else host.vm_names[int(vm)]


def _accumulate(acc: dict[str, Any], data: dict) -> None:
    """Sum numbers (also inside nested per-VM tables) into ``acc``; ``time`` is not summed."""
    for k, v in data.items():
        if k == "time" or isinstance(v, bool):
            continue
        if isinstance(v, int | float | np.integer | np.floating):
            prev = acc.get(k, 0.0)
            acc[k] = (prev if isinstance(prev, float) else 0.0) + float(v)
        elif isinstance(v, np.ndarray) and v.ndim == 0:
            acc[k] = float(acc.get(k, 0.0)) + float(v)
        elif isinstance(v, dict):
            sub = acc.get(k)
            if not isinstance(sub, dict):
                sub = acc[k] = {}
            _accumulate(sub, v)


@hookimpl
def memtune_event(host: Any, kind: str, vm: int | None, data: dict) -> None:
    """Record an event; ``cow-break``, ``share`` and ``reclaim`` events are summed per period (per
    VM and per text field such as ``technique``)."""
    st = _state(host)
    if st is None:
        return
    if kind in AGGREGATED:
        v = None if vm is None else int(vm)
        labels = tuple(sorted((k, x) for k, x in data.items() if isinstance(x, str)))
        key = (kind, v, labels)
        _accumulate(st.agg[key], data)
        st.agg_events[key] += 1
        if kind == "cow-break" and v is not None:
            n = next((data[k] for k in COW_COUNT_KEYS if k in data and not isinstance(data[k], bool)), 1)
            st.cow[v] += float(np.sum(n))
        if kind == "share":
            st.share_events += 1
        return
    st.record(host.now if st.clock is None else st.clock, kind, _vm_name(host, vm), dict(data))


@hookimpl
def memtune_tick(host: Any, now: float, dt: float) -> None:
    """At the end of each sampling period: per-VM reclamation, sharing, COW breaks, anomalies; then
    write what is queued (flush + fsync, at most once per tick)."""
    st = _state(host)
    if st is None or st.writer is None:
        return
    if np.floor(now / st.period) > np.floor((now - dt) / st.period):
        _close_period(host, st, now)
    st.writer.commit()


def _close_period(host: Any, st: AuditState, now: float, *, anomalies: bool = True) -> None:
    pb = float(host.page_bytes)
    names = host.vm_names
    length = now - st.period_start
    # reclamation: change of the pages in every plugin page state, and of the counters
    counts = host.pages.counts
    nstates = len(host.states)
    plugin_codes = [s.code for s in host.states if s.owner != "core"][:nstates]
    delta_states = (counts - st.last_states)[:, plugin_codes] * pb
    level_states = counts[:, plugin_codes] * pb
    st.last_states = counts.copy()
    counter_delta: dict[str, np.ndarray] = {}
    for name, arr in host.counters.items():
        seen = st.last_counters.get(name)
        cur = np.asarray(arr, dtype=np.float64)
        # the engine replaces the counters after warmup: a new array object counts from zero
        d = cur - seen[1] if seen is not None and seen[0] is arr else cur.copy()
        counter_delta[name] = d
        st.last_counters[name] = (arr, cur.copy())
    state_names = [host.states[c].name for c in plugin_codes]
    changed = (delta_states != 0).any(axis=1)
    for d in counter_delta.values():
        changed |= d != 0
    held = host.held() * pb
    for v in np.flatnonzero(changed):
        data = {
            "period_s": length,
            "delta_bytes": {
                n: float(delta_states[v, j]) for j, n in enumerate(state_names) if delta_states[v, j] != 0
            },
            "bytes": {n: float(level_states[v, j]) for j, n in enumerate(state_names) if level_states[v, j]},
            "counters": {n: float(d[v]) for n, d in sorted(counter_delta.items()) if d[v] != 0},
            "consumed_bytes": float(held[v]),
            "target_bytes": float(host.targets[v] * pb),
        }
        st.record(now, "reclaim", names[v], data)
    # summed cow-break / share / reclaim events, in a fixed order
    for key in sorted(st.agg, key=lambda k: (k[0], -1 if k[1] is None else k[1], k[2])):
        kind, v, labels = key
        st.record(
            now,
            kind,
            _vm_name(host, v),
            {"period_s": length, "events": st.agg_events[key], **dict(labels), **st.agg[key]},
        )
    st.agg.clear()
    st.agg_events.clear()
    _derived_share(host, st, now, length)
    if anomalies and length > 0:
        st.clock = now
        try:
            _anomalies(host, st, now, length)
        finally:
            st.clock = None
    st.cow[:] = 0
    st.period_start = now


def _derived_share(host: Any, st: AuditState, now: float, length: float) -> None:
    """When the sharing plugin announces no ``share`` events (none this run): what the ``shared``
    page state and the ``tps`` host pool say, whenever it changed."""
    code = host.states.code("shared")
    if code is None or st.share_events:
        return
    pb = float(host.page_bytes)
    shared = host.pages.counts[:, code] * pb
    frames = float(host.host_pools.get("tps", 0.0)) * pb
    key = (tuple(shared.tolist()), frames)
    if key == st.last_share or (not shared.any() and st.last_share is None):
        return
    st.last_share = key
    st.record(
        now,
        "share",
        None,
        {
            "derived": True,
            "period_s": length,
            "shared_bytes": {host.vm_names[v]: float(shared[v]) for v in np.flatnonzero(shared)},
            "frames_bytes": frames,
            "saved_bytes": float(shared.sum() - frames),
            "vms_sharing": int((shared > 0).sum()),
            "salting": host.settings.get("Mem.ShareForceSalting"),
        },
    )


def _anomalies(host: Any, st: AuditState, now: float, length: float) -> None:
    s = host.settings
    pb = float(host.page_bytes)
    memsz = host.vm_pages * pb
    st.consumed.append(host.held() * pb)
    st.active.append(host.sampler.estimate * memsz * host.powered)
    w = int(s["audit.leak_periods"])
    del st.consumed[: -(w + 1)]
    del st.active[: -(w + 1)]
    if len(st.consumed) == w + 1:
        c = np.array(st.consumed)
        a = np.array(st.active)
        half = w // 2
        d = np.diff(c, axis=0)
        first, second = d[:half].sum(axis=0), d[w - half :].sum(axis=0)
        growth = c[-half:].mean(axis=0) - c[:half].mean(axis=0)
        active_growth = a[-half:].mean(axis=0) - a[:half].mean(axis=0)
        rate = second / (half * st.period) * 3600.0 / memsz  # share of configured per hour
        leak = (
            host.powered
            & (first > 0)
            & (rate >= s["audit.leak_min_rate"])
            & (second >= s["audit.leak_steady_ratio"] * first)
            & (active_growth <= s["audit.leak_active_share"] * growth)
        )
        for v in np.flatnonzero(leak & ~st.leaking):
            host.emit(
                "anomaly",
                int(v),
                anomaly="leak-suspect",
                window_s=w * st.period,
                consumed_bytes=float(c[-1, v]),
                active_bytes=float(a[-1, v]),
                consumed_growth_bytes=float(c[-1, v] - c[0, v]),
                growth_per_hour=float(rate[v]),
                active_growth_bytes=float(active_growth[v]),
                memsz_bytes=float(memsz[v]),
            )
        st.leaking = leak
    storm_rate = st.cow / length
    storm = storm_rate > s["audit.cow_storm_rate"]
    for v in np.flatnonzero(storm & ~st.storming):
        host.emit(
            "anomaly",
            int(v),
            anomaly="cow-storm",
            cow_breaks=float(st.cow[v]),
            period_s=length,
            rate_per_s=float(storm_rate[v]),
            threshold_per_s=float(s["audit.cow_storm_rate"]),
        )
    st.storming = storm


@hookimpl
def memtune_finish(host: Any, result: dict) -> None:
    """Close the last (partial) period, write the ``log-end`` record and close the file."""
    st = host.plugin_data.get(NAME)
    if st is None or st.writer is None or st.writer.closed:
        return
    # what changed after the last period closed (also reclamation later in the last tick)
    _close_period(host, st, host.now, anomalies=host.now > st.period_start)
    st.writer.close(host.now, {"ticks": host.ticks})
