"""/metrics under load: 16 concurrent clients on loopback, 20 000 requests to a ``small`` serve.

This process runs what ``memtune serve small`` runs (the simulation thread at ``--speed``, the host
registry with process metrics, the threading HTTP server); a client process runs 16 threads, each
opening a new connection per request (as many scrapers would), half of them asking for gzip as
Prometheus does. Reported: errors, latency percentiles, requests over 0.5 s, and the server's RSS
sampled every 0.25 s (start, end, growth, and the growth over the second half, which tells a
leak, growing to the end, from a plateau). ``--tracemalloc`` also traces Python allocations from
the end of the warm-up and lists what grew.

Run: ``python -m benchmarks.load [--requests 20000] [--clients 16] [--tracemalloc]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any

TARGET_MAX_SECONDS = 0.5        # issue 17: no request over 0.5 s, 0 errors

_CLIENT = """
import json, sys, threading, time, urllib.request
url, clients, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lat, errors, lock = [], [], threading.Lock()
def work(k):
    mine, errs = [], []
    for i in range(k, total, clients):
        headers = {"Accept-Encoding": "gzip"} if i % 2 else {}
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
                body = r.read()
                if r.status != 200 or not body:
                    errs.append(f"status {r.status}, {len(body)} bytes")
        except Exception as exc:
            errs.append(repr(exc))
        mine.append(time.perf_counter() - t0)
    with lock:
        lat.extend(mine)
        errors.extend(errs)
threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
t0 = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"wall": time.perf_counter() - t0, "latencies": lat, "errors": errors[:20],
                  "error_count": len(errors)}))
"""


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def load_benchmark(requests: int = 20000, clients: int = 16, speed: float = 60.0, warmup: int = 500,
                   trace: bool = False, idle: float = 0.0) -> dict[str, Any]:
    """One load run; with ``idle`` > 0 the control run instead: no requests after the warm-up, the
    simulation alone for ``idle`` seconds (how much RSS the simulation itself adds meanwhile)."""
    from memtune.core.scenario import load_scenario
    from memtune.core.simulation import build_host
    from memtune.metrics import (
        RunHandle,
        SimulationThread,
        host_registry,
        start_metrics_server,
        stop_metrics_server,
    )
    from memtune.metrics.server import LISTEN_BACKLOG

    sc = load_scenario("small")
    handle = RunHandle()
    registry = host_registry(handle, process=True)
    sim = SimulationThread(handle, lambda run: build_host(sc, seed=sc.seed + run), duration=sc.duration,
                           tick=sc.tick, speed=speed, loop=True, after_step=registry.host_collector.prepare)
    sim.start()
    sim.started.wait()
    server, thread = start_metrics_server(registry, 0, "127.0.0.1")
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    rss: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.wait(0.25):
            rss.append((time.monotonic() - t0, rss_bytes()))

    def clients_run(n: int) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-c", _CLIENT, url, str(clients), str(n)], capture_output=True,
                             text=True, timeout=3600, check=True)
        return json.loads(out.stdout)

    try:
        clients_run(warmup)                       # threads, arenas, caches: steady state first
        if trace:
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
        rss_start = rss_bytes()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if idle > 0:
            t0 = time.perf_counter()
            time.sleep(idle)
            got = {"wall": time.perf_counter() - t0, "latencies": [0.0], "errors": [], "error_count": 0}
        else:
            got = clients_run(requests)
        stop.set()
        sampler.join()
        rss_end = rss_bytes()
        top: list[str] = []
        traced_growth = None
        if trace:
            after = tracemalloc.take_snapshot()
            diff = after.compare_to(before, "lineno")
            traced_growth = sum(d.size_diff for d in diff)
            top = [str(d) for d in diff[:10]]
            tracemalloc.stop()
    finally:
        sim.stop()
        sim.join(10)
        stop_metrics_server(server, thread)
    return summary(got, rss, rss_start, rss_end, traced_growth, top,
                   {"scenario": sc.name, "speed": speed, "clients": clients,
                    "listen_backlog": LISTEN_BACKLOG})


def summary(
    got: dict[str, Any],
    rss: list[tuple[float, int]],
    rss_start: int,
    rss_end: int,
    traced_growth: int | None,
    top: list[str],
    run: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one load run: latencies, errors, RSS (start, end, growth in the second half)."""
    lat = got["latencies"]
    half = [b for t, b in rss if t >= rss[-1][0] / 2] if rss else [rss_end]
    return {
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        **run,
        "requests": len(lat),
        "errors": got["error_count"],
        "error_examples": got["errors"],
        "wall_seconds": round(got["wall"], 2),
        "requests_per_second": round(len(lat) / got["wall"], 1),
        "latency_seconds": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "max": max(lat),
        },
        "over_0_5_s": sum(1 for x in lat if x > TARGET_MAX_SECONDS),
        "over_0_9_s": sum(1 for x in lat if x > 0.9),
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_growth_mb": round((rss_end - rss_start) / 2**20, 1),
        "rss_growth_second_half_mb": round((half[-1] - half[0]) / 2**20, 1),
        "rss_max_mb": round(max(b for _, b in rss) / 2**20, 1) if rss else None,
        "tracemalloc_growth_kb": None if traced_growth is None else round(traced_growth / 1024, 1),
        "tracemalloc_top": top,
        "meets_target": got["error_count"] == 0 and max(lat) <= TARGET_MAX_SECONDS,
    }


def run() -> dict[str, Any]:
    """Figures for ``python -m benchmarks.run``: 16 clients, 20 000 requests, RSS growth."""
    return load_benchmark()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--speed", type=float, default=60.0)
    ap.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (slower)")
    ap.add_argument(
        "--idle",
        type=float,
        default=0.0,
        help="control: no requests, the simulation alone for this many seconds",
    )
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    r = load_benchmark(args.requests, args.clients, args.speed, trace=args.tracemalloc, idle=args.idle)
    text = json.dumps(r, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
