"""Scrapes that ask for gzip (Prometheus does) get the same exposition gzipped, compressed once per tick."""

from __future__ import annotations

import gzip
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from memtune.core.engine import Engine
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.metrics import RunHandle, host_registry, start_metrics_server, stop_metrics_server


def small_host():
    data = {"name": "gzip-test", "duration": "1m", "tick": "5s", "seed": 2,
            "host": {"memory": "4 GiB", "page_scale": 64},
            "vm": [{"name": "vm", "count": 3, "memory": "1 GiB",
                    "workload": {"allocated": 0.8, "wss": 0.4, "touch_rate": 20000}}]}
    host = build_host(scenario_from_dict(data, "<test>"))
    Engine(host).step(5.0)
    return host


def get(port, method="GET", **headers):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def test_gzip_is_served_when_asked_and_only_then():
    host = small_host()
    reg = host_registry(RunHandle(host))
    server, thread = start_metrics_server(reg, 0)
    port = server.server_address[1]
    try:
        status, plain_headers, plain = get(port)
        _, gz_headers, packed = get(port, **{"Accept-Encoding": "gzip"})
        _, q_headers, q_packed = get(port, **{"Accept-Encoding": "identity;q=1, gzip;q=0.5"})
        _, head_headers, head = get(port, "HEAD", **{"Accept-Encoding": "gzip"})
    finally:
        stop_metrics_server(server, thread)
    assert status == 200 and "Content-Encoding" not in plain_headers
    assert plain.decode() == reg.render_text()
    assert gz_headers["Content-Encoding"] == "gzip" and gz_headers["Vary"] == "Accept-Encoding"
    assert int(gz_headers["Content-Length"]) == len(packed) < len(plain) / 4
    assert gzip.decompress(packed) == plain
    assert q_headers["Content-Encoding"] == "gzip" and gzip.decompress(q_packed) == plain
    assert head == b"" and head_headers["Content-Length"] == gz_headers["Content-Length"]
    names = {f.name for f in text_string_to_metric_families(gzip.decompress(packed).decode())}
    assert "memtune_vm_touches" in names


def test_bodies_are_kept_until_the_host_advances():
    host = small_host()
    engine = Engine(host)
    reg = host_registry(host)
    packed = reg.render_body(gzip=True)
    plain = reg.render_body()
    assert reg.render_body(gzip=True) is packed and reg.render_body() is plain
    assert gzip.decompress(packed) == plain == reg.render_text().encode()
    ticks = host.ticks
    engine.step(5.0)
    again = reg.render_body(gzip=True)
    assert again != packed
    assert gzip.decompress(again) == reg.render_body() == reg.render_text().encode()
    assert f"memtune_host_ticks_total {ticks + 1}.0\n".encode() in reg.render_body()


def test_a_host_not_started_yet_still_answers_gzip():
    reg = host_registry(RunHandle(None))
    text = gzip.decompress(reg.render_body(gzip=True)).decode()
    assert text == reg.render_text() and text.startswith("# HELP memtune_build_info")


def test_a_tick_is_rendered_ahead_only_while_someone_scrapes():
    """memtune serve's simulation thread calls prepare() after each tick: once scraped, the next
    scrape finds the tick's gzipped exposition ready; never scraped (or not for a while), no work."""
    from memtune.core.engine import Engine
    from memtune.core.scenario import load_scenario
    from memtune.core.simulation import build_host

    sc = load_scenario("small")
    host = build_host(sc)
    engine = Engine(host)
    engine.step(sc.tick)
    collector = host_registry(host).host_collector
    assert collector.prepare() is False and collector._cached is None
    first = collector.render_body(gzip=True)
    engine.step(sc.tick)
    assert collector.prepare() is True
    assert collector._cached[1] == host.ticks and collector._gzipped[0] is collector._cached[3]
    ready = collector._gzipped[1]
    assert collector.render_body(gzip=True) is ready and ready != first
    engine.step(sc.tick)
    assert collector.prepare(window=-1.0) is False          # the last scrape is too long ago
    assert collector._cached[1] == host.ticks - 1
