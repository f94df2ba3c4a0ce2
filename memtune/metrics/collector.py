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

import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from prometheus_client import ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from memtune.metrics.model import (
    GZIP_LEVEL,
    LE_LABELS,
    Snapshot,
    Table,
    build_info_family,
    check_plugin_families,
    gzip_compress,
    take_snapshot,
)
from memtune.metrics.tables import snapshot_tables
from memtune.metrics.text import TextRenderer, metric_lines

if TYPE_CHECKING:
    from memtune.core.host import Host

PREPARE_WINDOW = 60.0   # seconds after a scrape during which each new tick is rendered ahead

__all__ = ["GZIP_LEVEL", "LE_LABELS", "HostCollector", "HostRegistry", "RunHandle", "Snapshot", "Table",
           "host_registry", "snapshot_families", "snapshot_tables", "table_metric", "take_snapshot"]


def _sample(name: str, labels: dict[str, str], value: float) -> Sample:
    return Sample(name, labels, value, None, None)


_METRIC_CLASS = {
    "gauge": GaugeMetricFamily,
    "counter": CounterMetricFamily,
    "histogram": HistogramMetricFamily,
}


def table_metric(t: Table, vms: list[str]) -> Metric:
    """A prometheus_client family holding the same samples as ``t``."""
    fam = _METRIC_CLASS[t.type](t.name, t.doc, labels=[])
    samples = [_sample(n, labels, v) for n, labels, v in t.samples]
    for n, labels, values in t.per_vm:
        samples.extend(_sample(n, {"vm": v, **labels}, x) for v, x in zip(vms, values.tolist(), strict=True))
    if t.hist is not None:
        cum, sums = t.hist
        b, c, sm = t.name + "_bucket", t.name + "_count", t.name + "_sum"
        for i, v in enumerate(vms):
            row = cum[i].tolist()
            samples.extend(_sample(b, {"vm": v, "le": t.le[k]}, x) for k, x in enumerate(row))
            samples.append(_sample(c, {"vm": v}, row[-1]))
            samples.append(_sample(sm, {"vm": v}, float(sums[i])))
    fam.samples = samples
    return fam


def snapshot_families(s: Snapshot, latency_buckets: str = "full") -> list[Metric]:
    """prometheus_client families for a snapshot: the core's and the plugins' (checked)."""
    tables = snapshot_tables(s, latency_buckets)
    out = [table_metric(t, s.vm_names) for t in tables]
    check_plugin_families(s, {t.name for t in tables})
    out.extend(fam for _, fam in s.plugin_families)
    return out


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
    prometheus client_python's custom collectors do. ``render_text()`` gives the same exposition
    through the fast renderer (:mod:`memtune.metrics.text`), reusing the last text while the host
    has not advanced a tick since. ``latency_buckets`` ("full", "coarse", "off") sets the per-VM
    latency histogram's buckets (docs/metrics.md says what each costs).
    """

    def __init__(
        self, source: Host | RunHandle, lock: threading.Lock | None = None, *, latency_buckets: str = "full"
    ) -> None:
        self.handle = source if isinstance(source, RunHandle) else RunHandle(source, lock)
        self.latency_buckets = latency_buckets
        self._render_lock = threading.Lock()
        self._renderer: Any = None
        self._cached: tuple[Any, int, float, bytes] | None = None
        self._text: tuple[bytes | None, str] = (None, "")
        self._gzipped: tuple[bytes | None, bytes] = (None, b"")
        self.last_scrape: tuple[float, bool] | None = None  # (monotonic time, gzip asked) of the last scrape

    def snapshot(self) -> Snapshot | None:
        h = self.handle
        with h.lock if h.lock is not None else nullcontext():
            return None if h.host is None else take_snapshot(h.host)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        if snap is None:
            yield build_info_family()
            return
        yield from snapshot_families(snap, self.latency_buckets)

    def describe(self) -> list[Metric]:
        # collected lazily: the registry must not snapshot the host when the collector registers
        return []

    def render_text(self) -> str:
        """The exposition text of the host now (format 0.0.4)."""
        with self._render_lock:  # one render at a time; concurrent scrapes share its result
            body = self._body()
            if self._text[0] is not body:  # holding the body keeps `is` meaningful
                self._text = (body, body.decode("utf-8"))
            return self._text[1]

    def render_body(self, gzip: bool = False) -> bytes:
        """The exposition of the host now in UTF-8, gzip-compressed if asked (Prometheus asks).

        Compression uses level 1 (ISA-L where installed, :func:`~memtune.metrics.model.gzip_compress`):
        about 1 ms and 13x smaller for a 256-VM host. The compressed body is kept with the text, so
        scrapes of one tick compress it once.
        """
        self.last_scrape = (time.monotonic(), gzip)
        return self._render(gzip)

    def _render(self, gzip: bool) -> bytes:
        with self._render_lock:
            body = self._body()
            if not gzip:
                return body
            if self._gzipped[0] is not body:
                self._gzipped = (body, gzip_compress(body))
            return self._gzipped[1]

    def prepare(self, window: float = PREPARE_WINDOW) -> bool:
        """Render the host's current tick ahead of the next scrape, in the form the last scrape asked
        for, if there was a scrape within ``window`` seconds; returns whether it did.

        ``memtune serve``'s simulation thread calls it after each tick, so a scrape finds the tick's
        exposition (gzipped) ready instead of building it: the work moves from the scrape to the
        simulation thread, and is only done while someone scrapes.
        """
        last = self.last_scrape
        if last is None or time.monotonic() - last[0] > window:
            return False
        self._render(last[1])
        return True

    def _body(self) -> bytes:
        h = self.handle
        # the cached text is of a whole tick; while the host has not moved past it (the simulation may
        # be inside its next step) it is served without waiting for the simulation's lock
        c, host = self._cached, h.host
        if c is not None and host is not None and c[0] is host and c[1] == host.ticks and c[2] == host.now:
            return c[3]
        with h.lock if h.lock is not None else nullcontext():
            host = h.host
            if host is None:
                snap = None
            else:
                c = self._cached
                if c is not None and c[0] is host and c[1] == host.ticks and c[2] == host.now:
                    return c[3]
                snap = take_snapshot(host)
                key = (host, host.ticks, host.now)
        if snap is None:
            out: list[str] = []
            metric_lines([build_info_family()], out)
            return ("\n".join(out) + "\n").encode()
        if self._renderer is None:
            self._renderer = TextRenderer(self.latency_buckets)
        body = self._renderer.render_bytes(snap)
        self._cached = (*key, body)
        return body


class HostRegistry(CollectorRegistry):
    """An isolated registry around one :class:`HostCollector`, with its fast text rendering.

    With ``process`` the registry also carries prometheus_client's ``ProcessCollector``
    (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``process_open_fds`` ...), as
    exporters do; it is rendered per scrape and appended to the host's text, which is kept per tick.
    A gzipped scrape appends it as a second gzip member (RFC 1952 allows several; Go's reader, which
    Prometheus uses, reads them as one stream), so the large part is still compressed once per tick.
    """

    def __init__(self, collector: HostCollector, *, process: bool = False) -> None:
        super().__init__(auto_describe=False)
        self.host_collector = collector
        self.register(collector)
        self.process_collector = ProcessCollector(registry=self) if process else None

    def _process_text(self) -> bytes:
        if self.process_collector is None:
            return b""
        lines: list[str] = []
        metric_lines(self.process_collector.collect(), lines)
        return ("\n".join(lines) + "\n").encode() if lines else b""

    def render_text(self) -> str:
        """The fast text exposition of the host (see :meth:`HostCollector.render_text`)."""
        return self.host_collector.render_text() + self._process_text().decode()

    def render_body(self, gzip: bool = False) -> bytes:
        """The exposition as bytes, gzipped if asked (see :meth:`HostCollector.render_body`)."""
        body = self.host_collector.render_body(gzip)
        extra = self._process_text()
        if not extra:
            return body
        return body + (gzip_compress(extra) if gzip else extra)


def host_registry(
    source: Host | RunHandle,
    lock: threading.Lock | None = None,
    *,
    latency_buckets: str = "full",
    process: bool = False,
) -> HostRegistry:
    """An isolated registry exposing one host (never the process-global default registry).

    ``process`` adds the process's own ``process_*`` metrics (``memtune serve`` does; a textfile
    must not, node_exporter exports its own).
    """
    return HostRegistry(HostCollector(source, lock, latency_buckets=latency_buckets), process=process)
