"""The metrics data model: a :class:`Snapshot` of a host, :class:`Table` (one family as data), the
names and label values memtune uses, and the checks on plugins' families.

It sits below both outputs, as client_python keeps ``metrics_core``/``samples`` below
``exposition``: :mod:`memtune.metrics.tables` turns a snapshot into tables, which
:mod:`memtune.metrics.text` (fast exposition) and :mod:`memtune.metrics.collector`
(prometheus_client families) both render. Nothing here imports either of them.
"""

from __future__ import annotations

import gzip as _gzip
import platform
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric

from memtune import __version__
from memtune.core.latency import BUCKET_BOUNDS
from memtune.core.registry import each_plugin
from memtune.core.report import vm_amounts
from memtune.errors import PluginError

try:
    from isal import igzip as _igzip
except ImportError:                     # no wheel for this platform: zlib does the same job, slower
    _igzip = None

if TYPE_CHECKING:
    from memtune.core.host import Host

GZIP_LEVEL = 1          # level of gzipped scrapes: fast; zlib's 9 costs 12x the time for 25 % fewer bytes
_NAME_OK = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_SANITIZE = re.compile(r"[^a-zA-Z0-9_]")

# vm_amounts keys exported under a name of their own (the rest keep their key as the name).
AMOUNT_NAMES = {"memsz": "configured"}
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


# Exported histogram buckets, per latency-bucket mode (``memtune serve --latency-buckets``):
# - "full": the zero bucket, then every other bound of the core's histogram (4 per decade from 10 ns to
#   100 ms: neighbouring bounds 1.78x apart), then +Inf: 31 buckets, 33 series per VM with _count/_sum;
#   histogram_quantile interpolates within a factor of 1.78;
# - "coarse": the zero bucket and one bound per decade (10 ns .. 100 ms), then +Inf: 10 buckets, 12 series
#   per VM; a quantile is only known within a factor of 10;
# - "off": no per-VM histogram (0 series); stall and fault counters still show where time goes.
# Cumulative counts at a subset of bounds are exact in every mode.
def _bounds(step: int) -> np.ndarray:
    got = np.concatenate([[0], np.arange(1, BUCKET_BOUNDS.size, step)])
    return got if got[-1] == BUCKET_BOUNDS.size - 1 else np.append(got, BUCKET_BOUNDS.size - 1)


LATENCY_BUCKET_MODES = ("full", "coarse", "off")
_MODE_BOUNDS = {"full": _bounds(2), "coarse": _bounds(8)}
EXPORTED_BOUNDS = _MODE_BOUNDS["full"]
# per mode: the ``le`` labels (+Inf last) and the cumulative columns of the core histogram they read
HIST_LE = {m: [_le(b) for b in BUCKET_BOUNDS[ix]] + ["+Inf"] for m, ix in _MODE_BOUNDS.items()}
HIST_COLUMNS = {m: np.append(ix, BUCKET_BOUNDS.size) for m, ix in _MODE_BOUNDS.items()}
LE_LABELS = HIST_LE["full"]


def gzip_compress(data: bytes) -> bytes:
    """``data`` as one gzip member at :data:`GZIP_LEVEL`, by Intel ISA-L (``isal``: igzip level 1
    takes a fifth of zlib level 1's CPU for a slightly smaller output, measured on a 1.3 MB
    exposition), or by zlib where isal is not installed."""
    if _igzip is not None:
        return _igzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    return _gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


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
    settings: dict[str, float]
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
    for owner, got in each_plugin(h.pm, "memtune_collect_metrics", lambda _owner: {"host": h}):
        plugin_families.extend((owner, fam) for fam in got or [])
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
        settings={k: float(v) for k, v in h.settings.items()
                  if isinstance(v, int | float) and not isinstance(v, str)},
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


@dataclass
class Table:
    """One metric family as data: host-level samples and per-VM columns (one value per VM).

    Both outputs are built from it: prometheus_client families (:func:`table_metric`) and the fast
    text exposition (:mod:`memtune.metrics.text`), so the two cannot drift apart.
    """

    name: str
    type: str                                    # gauge, counter, histogram
    doc: str
    labels: tuple[str, ...] = ()                 # label names beyond "vm" (per VM) or all (host)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    per_vm: list[tuple[str, dict[str, str], np.ndarray]] = field(default_factory=list)
    hist: tuple[np.ndarray, np.ndarray] | None = None   # cumulative buckets (nvm x nb), sums (nvm)
    le: tuple[str, ...] = ()                     # the ``le`` label of each bucket column of ``hist``

    def add(self, suffix: str, labels: dict[str, str], value: float) -> None:
        self.samples.append((self.name + suffix, labels, float(value)))

    def column(self, suffix: str, labels: dict[str, str], values: np.ndarray) -> None:
        self.per_vm.append((self.name + suffix, labels, np.asarray(values, dtype=np.float64)))


def build_info_family() -> GaugeMetricFamily:
    """``memtune_build_info``: 1, labelled with the versions that produced the numbers."""
    fam = GaugeMetricFamily("memtune_build_info", "memtune build: version and runtime (always 1).",
                            labels=["version", "python_version", "numpy_version"])
    fam.add_metric([__version__, platform.python_version(), np.__version__], 1.0)
    return fam


def build_info_table() -> Table:
    t = Table("memtune_build_info", "gauge", "memtune build: version and runtime (always 1).")
    t.add("", {"version": __version__, "python_version": platform.python_version(),
               "numpy_version": np.__version__}, 1.0)
    return t


def counter_metric_name(counter: str) -> str:
    """Family name of a ``host.counters`` entry: ``memtune_vm_<counter>`` (+ ``_total`` on samples)."""
    stem = _SANITIZE.sub("_", counter).strip("_").lower()
    if stem.endswith("_total"):
        stem = stem[: -len("_total")]
    return f"memtune_vm_{stem}"


def amount_metric_name(key: str) -> str:
    """Family name of a :func:`vm_amounts` key (bytes): ``memtune_vm_<key>_bytes``."""
    stem = AMOUNT_NAMES.get(key, key)
    stem = _SANITIZE.sub("_", stem).strip("_").lower()
    return f"memtune_vm_{stem}_bytes"


def check_plugin_families(s: Snapshot, core: set[str]) -> None:
    """Plugin families must be prometheus_client families named ``memtune_*`` that nothing else uses."""
    seen: dict[str, str] = {}
    for plugin, fam in s.plugin_families:
        _check_plugin_family(plugin, fam, core, seen)


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
