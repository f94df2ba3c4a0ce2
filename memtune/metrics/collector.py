"""The host collector: Prometheus families built fresh from a snapshot of one :class:`Host`.

A scrape takes a :class:`Snapshot` of the host under the run's lock (the simulation thread holds the
same lock around every ``Engine.step``), then builds metric families from the copy outside the
lock, so a scrape never sees half a tick and never holds the simulation up for longer than a copy.

Names follow the Prometheus conventions: ``memtune_`` prefix, subsystem (``host``, ``vm``), base
units (``_bytes``, ``_seconds``), ``_total`` for counters, ``_ratio`` for fractions in 0..1, and
VMs, memory states and fault kinds as labels, never in names. docs/metrics.md maps every family
to its esxtop column / vSphere counter and node_exporter / libvirt exporter equivalents.

Per-VM amounts come from :func:`memtune.core.report.vm_amounts`, so every page state a plugin
registers (``ballooned``, ``compressed``, ``swapped``, ``shared`` ...) and every report column a plugin
adds (``shared_saved``, ``zero`` ...) becomes ``memtune_vm_<name>_bytes`` with no code here. Plugins'
own families come from the ``memtune_collect_metrics`` hook and are checked (``memtune_`` prefix,
no name clash) before they are exposed.
"""

from __future__ import annotations

import platform
import re
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from memtune import __version__
from memtune.core.latency import BUCKET_BOUNDS
from memtune.core.memstate import STATE_NAMES
from memtune.core.report import vm_amounts
from memtune.errors import PluginError

if TYPE_CHECKING:
    from memtune.core.host import Host

_NAME_OK = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_SANITIZE = re.compile(r"[^a-zA-Z0-9_]")

# vm_amounts keys exported under a name of their own (the rest keep their key as the name).
_AMOUNT_NAMES = {"memsz": "configured"}
# Help text of the core amounts and the usual plugin ones (esxtop column in brackets).
AMOUNT_HELP = {
    "configured": "Configured guest memory (esxtop MEMSZ).",
    "target": "Allocation target from share-based allocation with idle memory tax (esxtop TGT).",
    "granted": "Guest memory mapped to machine memory or shared (esxtop GRANT).",
    "consumed": "Machine memory the VM consumes: private frames, plugin pools and its share of "
                "shared frames (esxtop CNSM).",
    "active": "Estimated active memory from working-set sampling (esxtop TCHD).",
    "resident": "Guest memory backed by a private machine page.",
    "overhead": "Hypervisor overhead memory of the VM (esxtop OVHD).",
    "shared": "Guest memory shared by page sharing (esxtop SHRD).",
    "shared_saved": "Machine memory saved by page sharing (esxtop SHRDSVD).",
    "shared_consumed": "The VM's part of the shared frames (sum of 1/refcount).",
    "zero": "Zero pages shared (esxtop ZERO).",
    "ballooned": "Guest memory reclaimed by the balloon driver (esxtop MCTLSZ).",
    "compressed": "Guest memory held compressed (esxtop ZIP/s source; CACHEUSD holds it).",
    "compression_cache": "Machine memory used by the compression cache (esxtop CACHEUSD).",
    "swapped": "Guest memory swapped out by the hypervisor (esxtop SWCUR).",
}


def _le(bound: float) -> str:
    return repr(float(bound))


_LE = [_le(b) for b in BUCKET_BOUNDS] + ["+Inf"]


@dataclass
class Snapshot:
    """Everything one scrape exposes, copied out of the host while the lock is held."""

    scenario: str
    seed: int
    now: float
    ticks: int
    memory: float
    free: float
    min_free: float
    overhead: float
    reserved: float
    state: int
    time_in_state: np.ndarray
    large_pages_broken: bool
    host_pools: dict[str, float]
    vm_names: list[str]
    powered: np.ndarray
    reservation: np.ndarray
    limit: np.ndarray
    shares: np.ndarray
    active_estimate: np.ndarray
    amounts: dict[str, np.ndarray]
    touches: np.ndarray
    extra: np.ndarray
    stall: np.ndarray
    running: np.ndarray
    hist: np.ndarray
    faults: dict[str, np.ndarray]
    counters: dict[str, np.ndarray]
    plugin_families: list[tuple[str, Metric]] = field(default_factory=list)


def take_snapshot(host: Host) -> Snapshot:
    """Copy what the metrics need out of ``host`` (call with the run's lock held)."""
    h = host
    pb = float(h.page_bytes)
    book = h.book
    amounts = {k: np.array(v, dtype=np.float64) for k, v in vm_amounts(h).items()}
    plugin_families: list[tuple[str, Metric]] = []
    for impl in reversed(h.hook.memtune_collect_metrics.get_hookimpls()):
        got = impl.function(host=h)
        for fam in got or []:
            plugin_families.append((impl.plugin_name, fam))
    return Snapshot(
        scenario=h.scenario.name,
        seed=int(h.seed),
        now=float(h.now),
        ticks=int(h.ticks),
        memory=float(h.memory),
        free=float(h.free_bytes()),
        min_free=float(h.min_free),
        overhead=float(h.overhead_bytes),
        reserved=float((h.reservation * pb)[h.powered].sum()),
        state=int(h.state),
        time_in_state=np.array(h.time_in_state, dtype=np.float64),
        large_pages_broken=bool(h.large_pages_broken),
        host_pools={k: float(v) * pb for k, v in h.host_pools.items()},
        vm_names=list(h.vm_names),
        powered=np.array(h.powered, dtype=bool),
        reservation=h.reservation * pb,
        limit=h.limit * pb,
        shares=np.array(h.shares, dtype=np.float64),
        active_estimate=np.array(h.sampler.estimate, dtype=np.float64),
        amounts=amounts,
        touches=book.touches.copy(),
        extra=book.extra.copy(),
        stall=book.stall.copy(),
        running=book.running.copy(),
        hist=book.hist.copy(),
        faults={k: v.copy() for k, v in book.faults.items()},
        counters={k: v.copy() for k, v in h.counters.items()},
        plugin_families=plugin_families,
    )


def _gauge_per_vm(name: str, doc: str, vms: list[str], values: np.ndarray, unit: str = "") -> GaugeMetricFamily:
    fam = GaugeMetricFamily(name, doc, labels=["vm"], unit=unit)
    fam.samples = [_sample(name, {"vm": v}, x) for v, x in zip(vms, values.tolist(), strict=True)]
    return fam


def _counter_per_vm(name: str, doc: str, vms: list[str], values: np.ndarray,
                    extra_labels: dict[str, str] | None = None) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=["vm", *(extra_labels or {})])
    sname = name + "_total"
    base = extra_labels or {}
    fam.samples = [_sample(sname, {"vm": v, **base}, x) for v, x in zip(vms, values.tolist(), strict=True)]
    return fam


def _sample(name: str, labels: dict[str, str], value: float) -> Any:
    from prometheus_client.samples import Sample

    return Sample(name, labels, value, None, None)


def build_info_family() -> GaugeMetricFamily:
    """``memtune_build_info``: 1, labelled with the versions that produced the numbers."""
    fam = GaugeMetricFamily("memtune_build_info", "memtune build: version and runtime (always 1).",
                            labels=["version", "python_version", "numpy_version"])
    fam.add_metric([__version__, platform.python_version(), np.__version__], 1.0)
    return fam


def counter_metric_name(counter: str) -> str:
    """Family name of a ``host.counters`` entry: ``memtune_vm_<counter>`` (+ ``_total`` on samples)."""
    stem = _SANITIZE.sub("_", counter).strip("_").lower()
    if stem.endswith("_total"):
        stem = stem[: -len("_total")]
    return f"memtune_vm_{stem}"


def amount_metric_name(key: str) -> str:
    """Family name of a :func:`vm_amounts` key (bytes): ``memtune_vm_<key>_bytes``."""
    stem = _AMOUNT_NAMES.get(key, key)
    stem = _SANITIZE.sub("_", stem).strip("_").lower()
    return f"memtune_vm_{stem}_bytes"


def snapshot_families(s: Snapshot) -> list[Metric]:
    """Metric families describing a snapshot (no host access: safe outside the lock)."""
    vms = s.vm_names
    out: list[Metric] = [build_info_family()]

    info = GaugeMetricFamily("memtune_scenario_info", "Scenario and seed of the run being simulated (always 1).",
                             labels=["scenario", "seed"])
    info.add_metric([s.scenario, str(s.seed)], 1.0)
    out.append(info)

    # --- host ------------------------------------------------------------------------------
    for name, doc, value in (
        ("memtune_host_memory_bytes", "Physical memory of the host (esxtop PMEM total).", s.memory),
        ("memtune_host_free_bytes", "Free machine memory (esxtop PMEM free; vSphere mem.free).", s.free),
        ("memtune_host_min_free_bytes", "minFree: the sliding-scale free-memory reserve the memory states "
                                        "are measured against (esxtop minfree).", s.min_free),
        ("memtune_host_overhead_bytes", "Overhead memory of the powered-on VMs (vSphere mem.overhead).",
         s.overhead),
        ("memtune_host_reserved_bytes", "Memory reserved by the powered-on VMs (sched.mem.min; vSphere "
                                        "mem.reservedCapacity).", s.reserved),
        ("memtune_host_large_pages_broken", "1 once large pages were broken to make them shareable "
                                            "(free memory fell below 400 % of minFree).",
         1.0 if s.large_pages_broken else 0.0),
    ):
        out.append(GaugeMetricFamily(name, doc, value=value))
    ticks = CounterMetricFamily("memtune_host_ticks", "Simulation ticks run.")
    ticks.add_metric([], float(s.ticks))
    out.append(ticks)
    sim = CounterMetricFamily("memtune_host_simulated_seconds", "Simulated time since the run started "
                              "(divide a rate() by its rate() to get a per-simulated-second rate).")
    sim.add_metric([], s.now)
    out.append(sim)
    state = GaugeMetricFamily("memtune_host_state", "Memory state: 1 for the current state, 0 for the others "
                                                    "(esxtop 'state'; vSphere mem.state).", labels=["state"])
    for i, label in enumerate(STATE_NAMES):
        state.add_metric([label], 1.0 if i == s.state else 0.0)
    out.append(state)
    tis = CounterMetricFamily("memtune_host_state_seconds", "Simulated time spent in each memory state "
                                                           "(after warm-up).", labels=["state"])
    for i, label in enumerate(STATE_NAMES):
        tis.add_metric([label], float(s.time_in_state[i]))
    out.append(tis)
    pools = GaugeMetricFamily("memtune_host_pool_bytes", "Machine memory plugins hold for the host as a whole "
                                                        "(e.g. the frames behind shared pages).", labels=["pool"])
    for k in sorted(s.host_pools):
        pools.add_metric([k], s.host_pools[k])
    out.append(pools)

    # --- per VM: configuration and amounts --------------------------------------------------
    out.append(_gauge_per_vm("memtune_vm_powered_on", "1 if the VM passed admission control and runs.",
                             vms, s.powered.astype(np.float64)))
    out.append(_gauge_per_vm("memtune_vm_reservation_bytes", "Reservation (sched.mem.min).", vms, s.reservation))
    out.append(_gauge_per_vm("memtune_vm_limit_bytes", "Limit (sched.mem.max; configured if unset).",
                             vms, s.limit))
    out.append(_gauge_per_vm("memtune_vm_shares", "Memory shares (sched.mem.shares as a number).", vms, s.shares))
    out.append(_gauge_per_vm("memtune_vm_active_estimate_ratio", "Active fraction estimated by sampling "
                                                                "(max of the fast and slow averages).",
                             vms, s.active_estimate))
    for key in s.amounts:
        name = amount_metric_name(key)
        stem = _AMOUNT_NAMES.get(key, key)
        doc = AMOUNT_HELP.get(stem, f"Per-VM amount '{key}' (page state or plugin column).")
        out.append(_gauge_per_vm(name, doc, vms, s.amounts[key]))

    # --- per VM: activity counters, stall, latency histogram -------------------------------
    out.append(_counter_per_vm("memtune_vm_touches", "Guest memory touches (4 KiB accesses) simulated.",
                               vms, s.touches))
    faults = CounterMetricFamily("memtune_vm_faults", "Touches that faulted, by the state of the page "
                                                     "touched (free = first touch, shared = COW break, "
                                                     "swapped = swap-in ...).", labels=["vm", "kind"])
    for kind in sorted(s.faults):
        faults.samples.extend(_sample("memtune_vm_faults_total", {"vm": v, "kind": kind}, x)
                              for v, x in zip(vms, s.faults[kind].tolist(), strict=True))
    out.append(faults)
    out.append(_counter_per_vm("memtune_vm_stall_seconds", "Time the VM waited on memory (like Linux PSI "
                                                          "'some'; vSphere mem.latency).", vms, s.stall))
    out.append(_counter_per_vm("memtune_vm_running_seconds", "Time the VM was powered on.", vms, s.running))
    stall_ratio = np.divide(np.minimum(s.stall, s.running), s.running, out=np.zeros(len(vms)),
                            where=s.running > 0)
    out.append(_gauge_per_vm("memtune_vm_stall_ratio", "Stalled time / running time since the run (or its "
                                                       "warm-up) ended, 0..1.", vms, stall_ratio))
    out.append(_histogram(s))
    taken = {f.name for f in out}
    for counter in sorted(s.counters):
        name = counter_metric_name(counter)
        if name in taken:
            continue
        out.append(_counter_per_vm(name, f"Per-VM counter '{counter}' kept by a plugin (host.count).",
                                   vms, s.counters[counter]))
        taken.add(name)

    # --- plugins ------------------------------------------------------------------------------
    core_names = {f.name for f in out}
    seen: dict[str, str] = {}
    for plugin, fam in s.plugin_families:
        _check_plugin_family(plugin, fam, core_names, seen)
        out.append(fam)
    return out


def _histogram(s: Snapshot) -> HistogramMetricFamily:
    name = "memtune_vm_touch_extra_latency_seconds"
    fam = HistogramMetricFamily(name, "Extra latency per touch beyond a DRAM access (faults, decompression, "
                                      "swap-in, encryption), per touch.", labels=["vm"])
    cum = np.cumsum(s.hist, axis=1)
    bname, sname, cname = name + "_bucket", name + "_sum", name + "_count"
    samples = fam.samples
    le = _LE
    nb = len(le)
    for i, v in enumerate(s.vm_names):
        row = cum[i].tolist()
        samples.extend(_sample(bname, {"vm": v, "le": le[b]}, row[b]) for b in range(nb))
        samples.append(_sample(cname, {"vm": v}, row[-1]))
        samples.append(_sample(sname, {"vm": v}, float(s.extra[i])))
    return fam


def _check_plugin_family(plugin: str, fam: Any, core: set[str], seen: dict[str, str]) -> None:
    if not isinstance(fam, Metric):
        raise PluginError(plugin, "memtune_collect_metrics",
                          TypeError(f"returned {type(fam).__name__}, not a prometheus_client metric family"))
    if not fam.name.startswith("memtune_") or not _NAME_OK.match(fam.name):
        raise PluginError(plugin, "memtune_collect_metrics",
                          ValueError(f"metric {fam.name!r} must start with 'memtune_'"))
    if fam.name in core or fam.name in seen:
        owner = seen.get(fam.name, "the core collector")
        raise PluginError(plugin, "memtune_collect_metrics",
                          ValueError(f"metric {fam.name!r} is already exported by {owner}"))
    seen[fam.name] = plugin


class RunHandle:
    """The host being simulated, behind a lock shared by the simulation thread and scrapes.

    ``memtune serve`` swaps in a new host when a looping run starts over; scrapes always see one
    whole host.
    """

    def __init__(self, host: Host | None = None, lock: threading.Lock | None = None) -> None:
        self.host = host
        self.lock = lock if lock is not None else threading.Lock()


class HostCollector(Collector):
    """Prometheus collector over one host (or a :class:`RunHandle` whose host may change).

    ``collect()`` snapshots the host under the lock and builds fresh families per scrape, as
    prometheus client_python's custom collectors do.
    """

    def __init__(self, source: Host | RunHandle, lock: threading.Lock | None = None) -> None:
        self.handle = source if isinstance(source, RunHandle) else RunHandle(source, lock)

    def snapshot(self) -> Snapshot | None:
        h = self.handle
        with h.lock if h.lock is not None else nullcontext():
            return None if h.host is None else take_snapshot(h.host)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        if snap is None:
            yield build_info_family()
            return
        yield from snapshot_families(snap)

    def describe(self) -> list[Metric]:
        # collected lazily: the registry must not snapshot the host when the collector registers
        return []


def host_registry(source: Host | RunHandle, lock: threading.Lock | None = None) -> CollectorRegistry:
    """An isolated registry exposing one host (never the process-global default registry)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(HostCollector(source, lock))
    return reg
