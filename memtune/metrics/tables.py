"""The core's metric families of a :class:`~memtune.metrics.model.Snapshot`, as tables (data only)."""

from __future__ import annotations

import numpy as np

from memtune.core.memstate import STATE_NAMES
from memtune.metrics.model import (
    AMOUNT_HELP,
    AMOUNT_NAMES,
    HIST_COLUMNS,
    HIST_LE,
    LATENCY_BUCKET_MODES,
    Snapshot,
    Table,
    amount_metric_name,
    build_info_table,
    counter_metric_name,
)


def _gauge(name: str, doc: str, value: float) -> Table:
    t = Table(name, "gauge", doc)
    t.add("", {}, value)
    return t


def _vm_table(name: str, kind: str, doc: str, values: np.ndarray) -> Table:
    t = Table(name, kind, doc)
    t.column("_total" if kind == "counter" else "", {}, values)
    return t


def snapshot_tables(s: Snapshot, latency_buckets: str = "full") -> list[Table]:
    """The core's metric families for a snapshot, as :class:`Table` data (no host access).

    ``latency_buckets`` ("full", "coarse", "off") picks the buckets of the per-VM latency histogram
    (see :data:`memtune.metrics.model.HIST_LE`).
    """
    if latency_buckets not in LATENCY_BUCKET_MODES:
        raise ValueError(f"latency_buckets must be one of {LATENCY_BUCKET_MODES}, got {latency_buckets!r}")
    out: list[Table] = [build_info_table()]
    info = Table("memtune_scenario_info", "gauge", "Scenario and seed of the run being simulated (always 1).")
    info.add("", {"scenario": s.scenario, "seed": str(s.seed)}, 1.0)
    out.append(info)
    out += _host_memory_tables(s) + _host_run_tables(s)
    out += _vm_config_tables(s)
    out += _vm_activity_tables(s, latency_buckets)
    taken = {t.name for t in out}
    for counter in sorted(s.counters):
        name = counter_metric_name(counter)
        if name in taken:
            continue
        out.append(_vm_table(name, "counter", f"Per-VM counter '{counter}' kept by a plugin (host.count).",
                             s.counters[counter]))
        taken.add(name)
    return out


def _host_memory_tables(s: Snapshot) -> list[Table]:
    """Host memory as esxtop's PMEM line and vSphere's host counters show it."""
    return [
        _gauge("memtune_host_memory_bytes", "Physical memory of the host (esxtop PMEM total).", s.memory),
        _gauge(
            "memtune_host_free_bytes", "Free machine memory (esxtop PMEM free; vSphere mem.free).", s.free
        ),
        _gauge(
            "memtune_host_min_free_bytes",
            "minFree: the sliding-scale free-memory reserve the memory "
            "states are measured against (esxtop minfree).",
            s.min_free,
        ),
        _gauge(
            "memtune_host_overhead_bytes",
            "Overhead memory of the powered-on VMs (vSphere mem.overhead).",
            s.overhead,
        ),
        _gauge(
            "memtune_host_reserved_bytes",
            "Memory reserved by the powered-on VMs (sched.mem.min; vSphere mem.reservedCapacity).",
            s.reserved,
        ),
        _gauge(
            "memtune_host_large_pages_broken",
            "1 once large pages were broken to make them shareable "
            "(free memory fell below 400 % of minFree).",
            1.0 if s.large_pages_broken else 0.0,
        ),
    ]


def _host_run_tables(s: Snapshot) -> list[Table]:
    """The run's progress, memory state (now and time in each), host pools and settings."""
    ticks = Table("memtune_host_ticks", "counter", "Simulation ticks run.")
    ticks.add("_total", {}, s.ticks)
    sim = Table(
        "memtune_host_simulated_seconds",
        "counter",
        "Simulated time since the run started (divide "
        "a rate() by its rate() to get a per-simulated-second rate).",
    )
    sim.add("_total", {}, s.now)
    return [ticks, sim, *_memory_state_tables(s), _host_pool_table(s), _setting_table(s)]


def _memory_state_tables(s: Snapshot) -> list[Table]:
    """The current memory state (1 for it, 0 for the others) and simulated time in each."""
    state = Table(
        "memtune_host_state",
        "gauge",
        "Memory state: 1 for the current state, 0 for the others (esxtop 'state'; vSphere mem.state).",
        ("state",),
    )
    tis = Table(
        "memtune_host_state_seconds",
        "counter",
        "Simulated time spent in each memory state (after warm-up).",
        ("state",),
    )
    for i, label in enumerate(STATE_NAMES):
        state.add("", {"state": label}, 1.0 if i == s.state else 0.0)
        tis.add("_total", {"state": label}, float(s.time_in_state[i]))
    return [state, tis]


def _host_pool_table(s: Snapshot) -> Table:
    """Machine memory plugins hold for the host as a whole, per pool."""
    pools = Table(
        "memtune_host_pool_bytes",
        "gauge",
        "Machine memory plugins hold for the host as a whole (e.g. the frames behind shared pages).",
        ("pool",),
    )
    for k in sorted(s.host_pools):
        pools.add("", {"pool": k}, s.host_pools[k])
    return pools


def _setting_table(s: Snapshot) -> Table:
    """Each numeric setting of the run, so alerts see a setting change."""
    setting = Table(
        "memtune_host_setting",
        "gauge",
        "Value of each numeric setting of the run (booleans as "
        "0/1), e.g. Mem.ShareForceSalting: lets alerts see a setting change.",
        ("setting",),
    )
    for k in sorted(s.settings):
        setting.add("", {"setting": k}, s.settings[k])
    return setting


def _vm_config_tables(s: Snapshot) -> list[Table]:
    out = [
        _vm_table(
            "memtune_vm_powered_on",
            "gauge",
            "1 if the VM passed admission control and runs.",
            s.powered.astype(np.float64),
        ),
        _vm_table("memtune_vm_reservation_bytes", "gauge", "Reservation (sched.mem.min).", s.reservation),
        _vm_table("memtune_vm_limit_bytes", "gauge", "Limit (sched.mem.max; configured if unset).", s.limit),
        _vm_table("memtune_vm_shares", "gauge", "Memory shares (sched.mem.shares as a number).", s.shares),
        _vm_table(
            "memtune_vm_active_estimate_ratio",
            "gauge",
            "Active fraction estimated by sampling (max of the fast and slow averages).",
            s.active_estimate,
        ),
    ]
    for key, values in s.amounts.items():
        stem = AMOUNT_NAMES.get(key, key)
        doc = AMOUNT_HELP.get(stem, f"Per-VM amount '{key}' (page state or plugin column).")
        out.append(_vm_table(amount_metric_name(key), "gauge", doc, values))
    return out


def _vm_activity_tables(s: Snapshot, latency_buckets: str) -> list[Table]:
    # touch and fault counts are importance-sampled estimates: exported as whole 4 KiB touches
    out = []
    out.append(
        _vm_table(
            "memtune_vm_touches",
            "counter",
            "Guest memory touches (4 KiB accesses) simulated.",
            np.rint(s.touches),
        )
    )
    faults = Table(
        "memtune_vm_faults",
        "counter",
        "Touches that faulted, by the state of the page touched "
        "(free = first touch, shared = COW break, swapped = swap-in ...).",
        ("kind",),
    )
    for kind in sorted(s.faults):
        faults.column("_total", {"kind": kind}, np.rint(s.faults[kind]))
    out.append(faults)
    out.append(
        _vm_table(
            "memtune_vm_stall_seconds",
            "counter",
            "Time the VM waited on memory (like Linux PSI 'some'; vSphere mem.latency).",
            s.stall,
        )
    )
    out.append(_vm_table("memtune_vm_running_seconds", "counter", "Time the VM was powered on.", s.running))
    stall_ratio = np.divide(
        np.minimum(s.stall, s.running), s.running, out=np.zeros(len(s.vm_names)), where=s.running > 0
    )
    out.append(
        _vm_table(
            "memtune_vm_stall_ratio",
            "gauge",
            "Stalled time / running time since the run (or its warm-up) started, 0..1.",
            stall_ratio,
        )
    )
    if latency_buckets == "off":
        return out
    hist = Table(
        "memtune_vm_touch_extra_latency_seconds",
        "histogram",
        "Extra latency per touch beyond a "
        "DRAM access (faults, decompression, swap-in, encryption), per touch.",
    )
    hist.hist = (np.rint(np.cumsum(s.hist, axis=1)[:, HIST_COLUMNS[latency_buckets]]), s.extra)
    hist.le = tuple(HIST_LE[latency_buckets])
    out.append(hist)
    return out
