"""The metrics server and the simulation thread: loopback by default, consistent under load, clean stop."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from memtune.cli import main_group
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.errors import UserError
from memtune.metrics import (
    RunHandle,
    SimulationThread,
    host_registry,
    start_metrics_server,
    stop_metrics_server,
)

TECHNIQUES = ["balloon", "tps", "ksm", "compression", "swap", "encryption", "audit"]

TOML = """name = "serve-test"
duration = "{duration}"
tick = "5s"
seed = 5
[host]
memory = "4 GiB"
page_scale = 64
[[vm]]
name = "vm"
count = 3
memory = "1 GiB"
[vm.workload]
allocated = 0.8
wss = 0.4
touch_rate = 20000
"""


def tiny(duration="1h"):
    import tomllib

    return scenario_from_dict(tomllib.loads(TOML.format(duration=duration)), "<test>")


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict, name: str) -> float:
    return fams[name].samples[0].value


def test_binds_loopback_unless_told():
    from prometheus_client.registry import CollectorRegistry

    server, thread = start_metrics_server(CollectorRegistry(), 0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        stop_metrics_server(server, thread)
    bind = next(p for p in main_group.get_command(None, "serve").params if p.name == "bind")
    assert bind.default == "127.0.0.1"


def test_port_in_use_is_a_user_error():
    from prometheus_client.registry import CollectorRegistry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UserError, match="already in use"):
            start_metrics_server(CollectorRegistry(), port)
        r = CliRunner().invoke(main_group, ["serve", "--port", str(port)])
        assert r.exit_code == 2 and "already in use" in r.output


@pytest.mark.slow
def test_server_answers_hundreds_of_scrapes_while_the_simulation_runs():
    sc = tiny("10h")
    handle = RunHandle()
    sim = SimulationThread(handle, lambda run: build_host(sc, disable=TECHNIQUES), duration=sc.duration,
                           tick=sc.tick, speed=100.0, loop=False)
    sim.start()
    while handle.host is None:
        time.sleep(0.01)
    server, thread = start_metrics_server(host_registry(handle), 0)
    port = server.server_address[1]
    errors: list[BaseException] = []
    per_thread, nthreads = 250, 4
    ticks_seen: list[list[float]] = [[] for _ in range(nthreads)]

    def client(k: int) -> None:
        try:
            for i in range(per_thread):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    text = r.read().decode()
                # one whole tick per scrape: exactly one memory state, all VMs at the same time
                assert len(re.findall(r'^memtune_host_state\{state="\w+"\} 1', text, re.M)) == 1
                running = set(re.findall(r'^memtune_vm_running_seconds_total\{vm="[^"]+"\} (\S+)', text,
                                         re.M))
                assert len(running) == 1
                ticks_seen[k].append(float(re.search(r"^memtune_host_ticks_total (\S+)", text, re.M)[1]))
                if i % 25 == 0:  # and a full parse now and then (parsing is slower than serving)
                    names = {f.name for f in text_string_to_metric_families(text)}
                    assert "memtune_vm_touch_extra_latency_seconds" in names
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    started = time.monotonic()
    clients = [threading.Thread(target=client, args=(k,)) for k in range(nthreads)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(60)
    elapsed = time.monotonic() - started
    sim.stop()
    sim.join(10)
    stop_metrics_server(server, thread)
    assert not errors, errors[0]
    assert sim.error is None
    assert all(len(t) == per_thread for t in ticks_seen)
    for seen in ticks_seen:
        assert seen == sorted(seen)  # counters never go back within a run
    assert max(max(t) for t in ticks_seen) > min(min(t) for t in ticks_seen)  # the simulation ran meanwhile
    print(f"{nthreads * per_thread} scrapes in {elapsed:.2f} s ({nthreads * per_thread / elapsed:.0f}/s)")
    with pytest.raises(OSError):
        scrape(port)


def test_simulated_time_advances_speed_times_wall_time_at_most():
    sc = tiny("2m")
    handle = RunHandle()
    sim = SimulationThread(
        handle,
        lambda run: build_host(sc, disable=TECHNIQUES),
        duration=120.0,
        tick=5.0,
        speed=600.0,
        loop=False,
    )
    t0 = time.monotonic()
    sim.start()
    sim.join(30)
    assert not sim.is_alive() and sim.error is None
    # 120 simulated seconds at 600x may not take less than 0.2 s of wall time
    assert time.monotonic() - t0 >= 120.0 / 600.0
    assert handle.host.now == 120.0 and sim.runs == 1


def test_loop_starts_over_on_a_fresh_host():
    sc = tiny("30s")
    handle = RunHandle()
    seeds = []

    def make(run):
        seeds.append(100 + run)
        return build_host(sc, seed=100 + run, disable=TECHNIQUES)

    sim = SimulationThread(handle, make, duration=30.0, tick=5.0, speed=1e6, loop=True)
    sim.start()
    deadline = time.monotonic() + 20
    while sim.runs < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.stop()
    sim.join(10)
    assert sim.runs >= 3 and seeds[:3] == [100, 101, 102]
    assert handle.host.now <= 30.0


def test_serve_once_exits_zero_at_the_end(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(TOML.format(duration="1m"))
    r = CliRunner().invoke(main_group, ["serve", str(path), "--once", "--speed", "10000", "--port", "0"])
    assert r.exit_code == 0, r.output
    assert "metrics on http://127.0.0.1:" in r.output and "stopped after 1 run(s)" in r.output


@pytest.mark.parametrize(
    "args, field",
    [
        (["--speed", "0"], "--speed"),
        (["--port", "70000"], "--port"),
        (["--duration", "soon"], "--duration"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args, field):
    r = CliRunner().invoke(main_group, ["serve", *args])
    assert r.exit_code == 2
    assert field in r.output and r.output.count("\n") == 1


def test_a_failing_plugin_gives_500_naming_it_and_the_server_keeps_answering():
    import types
    import urllib.error

    from prometheus_client.core import GaugeMetricFamily

    from memtune import hookimpl
    from memtune.core.engine import Engine
    from memtune.core.plugins import build_plugin_manager

    @hookimpl
    def memtune_collect_metrics(host):
        return [GaugeMetricFamily("parking_lot_bytes", "No memtune_ prefix.", value=1.0)]

    plugin = types.SimpleNamespace(memtune_collect_metrics=memtune_collect_metrics)
    pm = build_plugin_manager(disable=TECHNIQUES, entrypoints=False, extra=[("parking", plugin)])
    host = build_host(tiny(), pm=pm)
    Engine(host).step(5.0)
    server, thread = start_metrics_server(host_registry(host), 0)
    port = server.server_address[1]
    try:
        for _ in range(2):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert err.value.code == 500
            assert b"parking" in err.value.read()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=5)
        assert err.value.code == 404
    finally:
        stop_metrics_server(server, thread)


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the listen backlog")
def test_the_listen_backlog_holds_a_burst_of_scrapers():
    """With socketserver's backlog of 5, 16 scrapers connecting at once overflowed the accept queue
    and some waited for a SYN retransmit (~1 s). ``ss -ltn`` shows a listening socket's backlog as
    Send-Q (what the kernel granted, capped by net.core.somaxconn)."""
    from prometheus_client.registry import CollectorRegistry

    server, thread = start_metrics_server(CollectorRegistry(), 0)
    try:
        port = server.server_address[1]
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                             check=True).stdout.split()
        assert int(out[2]) >= 64, out  # State Recv-Q Send-Q Local Peer
    finally:
        stop_metrics_server(server, thread)
