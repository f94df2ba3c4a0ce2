"""Serving metrics: prometheus-client's HTTP server on an isolated registry, and a simulation
thread that runs a scenario in scaled real time for ``memtune serve``.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, gzip_accepted
from prometheus_client.registry import CollectorRegistry

from memtune.errors import UserError
from memtune.metrics.collector import RunHandle
from memtune.metrics.text import CONTENT_TYPE

# memtune's default /metrics port. 9109 is graphite_exporter's in the Prometheus default-port
# allocations (github.com/prometheus/prometheus/wiki/Default-port-allocations), whose 9100-9999 range
# is taken; 19109 and 19110 are outside it and listed by no copy of that page we could read
# (docs/metrics.md#ports).
DEFAULT_PORT = 19109
DEFAULT_TUNER_PORT = 19110   # the documented port for `memtune optimize --metrics-port`
# listen backlog: socketserver's default of 5 made connections beyond it wait for a SYN retry (~1 s)
# under 8-16 concurrent scrapers (measured); the kernel caps it at net.core.somaxconn
LISTEN_BACKLOG = 128
DEFAULT_BIND = "127.0.0.1"  # loopback unless told otherwise: the exposition is unauthenticated


def start_metrics_server(registry: CollectorRegistry, port: int = DEFAULT_PORT,
                         bind: str = DEFAULT_BIND) -> tuple[Any, threading.Thread]:
    """Serve ``registry`` on ``http://bind:port/metrics`` from a daemon thread.

    Both kinds of registry are served by prometheus-client's threading WSGI server (one thread per
    request) with a listen backlog of :data:`LISTEN_BACKLOG`: a plain registry (e.g. the tuner's)
    through prometheus-client's own WSGI app, a
    :class:`~memtune.metrics.collector.HostRegistry` through an app that writes the fast text
    rendering (``generate_latest`` needs about a second for a 256-VM host).

    Returns ``(server, thread)``; ``server.server_address[1]`` is the port (useful with ``port=0``).
    Stop it with :func:`stop_metrics_server`. A port in use or an address that cannot be bound is
    a :class:`UserError` (field ``--port`` / ``--bind``).
    """
    try:
        app = metrics_app(registry) if hasattr(registry, "render_text") else make_wsgi_app(registry)
        return _start_server(app, int(port), bind)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {bind} is already in use", field="--port") from None
        raise UserError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}", field="--bind") from None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Log nothing (one line per scrape would flood the terminal)."""


def metrics_app(registry: Any) -> Callable:
    """WSGI app: ``/metrics`` (and ``/``) answer the registry's fast text; other paths 404.

    A client that sends ``Accept-Encoding: gzip`` (Prometheus does) gets it gzipped when the
    registry has ``render_body`` (a :class:`~memtune.metrics.collector.HostRegistry`), compressed
    once per tick.
    """
    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: memtune serves /metrics\n"]
        render_body = getattr(registry, "render_body", None)
        gzip = render_body is not None and gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        try:
            body = render_body(gzip) if render_body is not None else registry.render_text().encode("utf-8")
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not kill the server
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [f"memtune: error: {exc}\n".encode()]
        headers = [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))]
        if render_body is not None:
            headers.append(("Vary", "Accept-Encoding"))
        if gzip:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body] if environ.get("REQUEST_METHOD") != "HEAD" else [b""]

    return app


def _start_server(app: Callable, port: int, bind: str) -> tuple[Any, threading.Thread]:
    class Server(ThreadingWSGIServer):
        """prometheus-client's threading WSGI server with the address family of ``bind`` and a
        listen backlog of :data:`LISTEN_BACKLOG`."""

        request_queue_size = LISTEN_BACKLOG

    infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    Server.address_family = family
    httpd = make_server(sockaddr[0], port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="memtune-metrics-http", daemon=True)
    thread.start()
    return httpd, thread


def stop_metrics_server(server: Any, thread: threading.Thread | None = None, timeout: float = 5.0) -> None:
    """Stop serving, close the listening socket and wait for the server thread."""
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout)


class SimulationThread(threading.Thread):
    """Runs hosts built by ``make_host`` tick by tick so that simulated time advances ``speed``
    times as fast as wall time; holds ``handle.lock`` around each ``Engine.step``.

    With ``loop`` a run that reaches ``duration`` starts over on a fresh host (counters restart,
    which Prometheus handles as a counter reset); otherwise the thread ends and sets ``finished``.
    ``stop()`` ends it within one tick or sleep.
    """

    def __init__(self, handle: RunHandle, make_host: Callable[[int], Any], *, duration: float, tick: float,
                 speed: float, loop: bool, clock: Callable[[], float] = time.monotonic,
                 after_step: Callable[[], Any] | None = None) -> None:
        super().__init__(name="memtune-simulation", daemon=True)
        if speed <= 0:
            raise UserError("must be greater than zero", field="--speed")
        self.handle = handle
        self.make_host = make_host
        self.duration = float(duration)
        self.tick = float(tick)
        self.speed = float(speed)
        self.loop = loop
        self.clock = clock
        self.after_step = after_step        # e.g. HostCollector.prepare: render the tick for the next scrape
        self.runs = 0
        self.lag = 0.0                      # wall seconds behind schedule at the last tick
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self.started = threading.Event()       # the first host is configured and visible
        self.finished = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        from memtune.core.engine import Engine

        try:
            while not self._stop_event.is_set():
                host = self.make_host(self.runs)
                with self.handle.lock:
                    engine = Engine(host)
                    self.handle.host = host
                self.started.set()
                self.runs += 1
                steps = max(1, int(round(self.duration / self.tick)))
                start = self.clock()
                for i in range(steps):
                    if self._stop_event.is_set():
                        break
                    with self.handle.lock:
                        engine.step(self.tick)
                    if self.after_step is not None:
                        self.after_step()
                    due = start + (i + 1) * self.tick / self.speed
                    wait = due - self.clock()
                    self.lag = max(0.0, -wait)
                    if wait > 0 and self._stop_event.wait(wait):
                        break
                self._finish(engine)
                if not self.loop:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises
            self.error = exc
        finally:
            self.started.set()
            self.finished.set()

    def _finish(self, engine: Any) -> None:
        """End a run the way ``Engine.run`` does, so plugins flush (e.g. the audit log)."""
        from memtune.core.report import build_result

        with self.handle.lock:
            host = engine.host
            engine.timeline.record()
            host.hook.memtune_finish(host=host, result=build_result(host, engine.timeline))
