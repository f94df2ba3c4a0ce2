"""Live metrics: a real-host run exposes the simulator's ``memtune_*`` families while it runs.

:class:`LiveExporter` observes a live run (:mod:`memtune.live.observe`): after each control tick it
builds a :class:`~memtune.metrics.model.Snapshot` of the real host (:mod:`memtune.live.snapshot`)
and keeps it; scrapes render the kept snapshot with the simulator's renderer
(:class:`~memtune.metrics.text.TextRenderer`), so names, types and labels are the simulator's.
It serves through :func:`memtune.metrics.start_metrics_server` (loopback) inside a
:class:`~memtune.metrics.collector.HostRegistry`, and can rewrite a textfile every tick
(node_exporter's textfile collector).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from memtune.errors import UserError
from memtune.live.observe import RunInfo, TickView
from memtune.live.snapshot import LiveSnapshots
from memtune.metrics.collector import HostRegistry, snapshot_families
from memtune.metrics.model import Snapshot, build_info_family, gzip_compress
from memtune.metrics.text import TextRenderer, metric_lines
from memtune.metrics.textfile import write_body

LOOPBACK = "127.0.0.1"


class LiveExporter(Collector):
    """Observer of a live run and collector of its metrics (one run at a time; a new ``start``
    replaces the previous run's figures, as ``memtune serve`` does when a looping run starts over)."""

    def __init__(self, latency_buckets: str = "full", textfile: str | Path | None = None) -> None:
        self.latency_buckets = latency_buckets
        self.textfile = textfile
        self.textfile_error: str | None = None
        self._lock = threading.Lock()
        self._builder: LiveSnapshots | None = None
        self._snapshot: Snapshot | None = None
        self._version = 0
        self._renderer = TextRenderer(latency_buckets)
        self._body: tuple[int, bytes] = (-1, b"")
        self._gzipped: tuple[int, bytes] = (-1, b"")

    # --- the run's side ------------------------------------------------------------------------
    def start(self, info: RunInfo) -> None:
        self._builder = LiveSnapshots(info)

    def tick(self, view: TickView) -> None:
        if self._builder is None:
            raise RuntimeError("LiveExporter.tick before start")
        snap = self._builder.build(view)
        with self._lock:
            self._snapshot = snap
            self._version += 1
        if self.textfile is not None and self.textfile_error is None:
            try:
                write_body(self.render_body(), self.textfile)
            except UserError as exc:    # the run goes on (it changes the host); said once, not silently
                self.textfile_error = str(exc)
                print(f"memtune: warning: {exc}; metrics are no longer written there", file=sys.stderr)

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    # --- the scrape's side ---------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot
        if snap is None:
            yield build_info_family()
            return
        yield from snapshot_families(snap, self.latency_buckets)

    def describe(self) -> list[Metric]:
        return []

    def render_body(self, gzip: bool = False) -> bytes:
        """The exposition of the last tick (UTF-8, gzipped if asked), rendered once per tick."""
        with self._lock:
            version, snap = self._version, self._snapshot
            if self._body[0] != version:
                if snap is None:
                    lines: list[str] = []
                    metric_lines([build_info_family()], lines)
                    body = ("\n".join(lines) + "\n").encode()
                else:
                    body = self._renderer.render_bytes(snap)
                self._body = (version, body)
            if not gzip:
                return self._body[1]
            if self._gzipped[0] != version:
                self._gzipped = (version, gzip_compress(self._body[1]))
            return self._gzipped[1]

    def render_text(self) -> str:
        return self.render_body().decode("utf-8")

    def registry(self, process: bool = True) -> HostRegistry:
        """An isolated registry serving this exporter (plus the process's own metrics)."""
        return HostRegistry(self, process=process)  # type: ignore[arg-type]  # duck-typed collector


def serve(exporter: LiveExporter, port: int) -> tuple[Any, threading.Thread]:
    """Serve ``exporter`` on ``http://127.0.0.1:PORT/metrics`` (loopback only; 0 = any free port)."""
    from memtune.metrics.server import start_metrics_server

    return start_metrics_server(exporter.registry(), port, LOOPBACK)
