"""A real Prometheus scrapes `memtune serve`; every dashboard query returns data; promtool is happy.

Needs Debian's ``prometheus`` package (``scripts/test`` installs it). Starts, on free loopback
ports: ``memtune serve small`` (simulated 30x real time), a stand-in for ``memtune optimize
--metrics-port`` (TunerMetrics on its own registry, fed a few objectives), and ``prometheus`` with a
temporary config (scrape_interval 1s) and temporary storage.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RATE_INTERVAL = "5s"

if PROMETHEUS is None or PROMTOOL is None:
    pytest.skip("the prometheus/promtool binaries are missing (Debian package 'prometheus'; "
                "scripts/test installs it)", allow_module_level=True)

TUNER_STANDIN = textwrap.dedent("""
    import sys, time
    from prometheus_client.registry import CollectorRegistry
    from memtune.metrics import TunerMetrics, start_metrics_server
    reg = CollectorRegistry()
    tm = TunerMetrics(reg)
    server, thread = start_metrics_server(reg, 0, "127.0.0.1")
    print(server.server_address[1], flush=True)
    tm.infeasible()
    for i in range(10**6):
        tm.observe(10.0 / (1 + i % 50))
        time.sleep(0.2)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_port(proc: subprocess.Popen, stream, pattern: str, timeout: float = 20.0) -> int:
    """The port a child announces on its first output line matching ``pattern``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stream.readline()
        if not line:
            if proc.poll() is not None:
                raise AssertionError(f"child exited with {proc.returncode} before announcing its port")
            continue
        m = re.search(pattern, line)
        if m:
            return int(m.group(1))
    raise AssertionError("child did not announce its port in time")


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def query(prom: str, expr: str) -> list:
    body = json.loads(get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)
    return proc.returncode


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prom")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen] = []
    try:
        serve = subprocess.Popen(
            [sys.executable, "-c", "from memtune.cli import main; main()", "serve", "small",
             "--speed", "30", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(serve)
        tuner = subprocess.Popen([sys.executable, "-c", TUNER_STANDIN], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        procs.append(tuner)
        serve_port = read_port(serve, serve.stderr, r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
        tuner_port = read_port(tuner, tuner.stdout, r"^(\d+)$")
        prom_port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(textwrap.dedent(f"""
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: memtune
                static_configs: [{{targets: ["127.0.0.1:{serve_port}"]}}]
              - job_name: memtune-tuner
                static_configs: [{{targets: ["127.0.0.1:{tuner_port}"]}}]
        """))
        with open(tmp / "prometheus.log", "w") as log:
            prom = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                stdout=subprocess.DEVNULL, stderr=log)
        procs.append(prom)
        url = f"http://127.0.0.1:{prom_port}"
        deadline = time.monotonic() + 25
        up = []
        while time.monotonic() < deadline:
            try:
                targets = json.loads(get(f"{url}/api/v1/targets"))["data"]["activeTargets"]
                up = [t for t in targets if t["health"] == "up"]
                if len(up) == 2:
                    break
            except OSError:
                pass
            assert prom.poll() is None, (tmp / "prometheus.log").read_text()
            time.sleep(0.3)
        assert len(up) == 2, f"targets not up: {up}"
        yield {"prom": url, "serve": serve, "serve_port": serve_port,
               "instance": {"memtune": f"127.0.0.1:{serve_port}", "memtune-tuner": f"127.0.0.1:{tuner_port}"}}
    finally:
        for p in reversed(procs):
            stop(p)


def substitute(expr: str, instance: str, vm: str) -> str:
    return (expr.replace("$__rate_interval", RATE_INTERVAL).replace("${instance}", instance)
            .replace("$instance", instance).replace("${vm}", vm).replace("$vm", vm))


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    dash = json.loads(path.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"{p['title']} / {t['refId']}", t["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            assert m, q
            out.append((f"variable {var['name']}", m.group(1)))
    return out


def test_every_dashboard_query_returns_data(stack):
    prom = stack["prom"]
    # a real VM name, as the $vm variable would offer it
    deadline = time.monotonic() + 10
    vms = []
    while not vms and time.monotonic() < deadline:
        vms = query(prom, 'memtune_vm_configured_bytes{job="memtune"}')
        time.sleep(0.2)
    assert vms
    vm = sorted(r["metric"]["vm"] for r in vms)[0]
    # a counter a plugin keeps with host.count exists once it counted something: a query over a
    # family the host does not export (yet) must be empty, every other one must have data
    exported = set(re.findall(rb"^(memtune_[a-z0-9_]+)", get(f"http://127.0.0.1:{stack['serve_port']}/metrics"),
                              re.M))
    exported = {n.decode() for n in exported} | {"memtune_tuner_"}
    pending, absent = [], []
    for path in DASHBOARDS:
        job = "memtune-tuner" if "tuner" in path.name else "memtune"
        for title, expr in dashboard_queries(path):
            item = (path.name, title, substitute(expr, stack["instance"][job], vm))
            names = set(re.findall(r"memtune_[a-z0-9_]+", expr))
            ok = all(n in exported or n.startswith("memtune_tuner_") for n in names)
            (pending if ok else absent).append(item)
    # rate() over 5s needs a few 1s scrapes: retry each query until it has data or time runs out
    deadline = time.monotonic() + 15
    empty = pending
    while empty and time.monotonic() < deadline:
        empty = [(d, t, e) for d, t, e in empty if not query(prom, e)]
        if empty:
            time.sleep(0.5)
    assert not empty, "queries without data:\n" + "\n".join(f"{d}: {t}: {e}" for d, t, e in empty)
    # the numbers Prometheus holds are the model's: one memory state at a time, free under total
    states = query(prom, 'memtune_host_state{job="memtune"} == 1')
    assert len(states) == 1
    (free,) = query(prom, 'memtune_host_free_bytes{job="memtune"} < memtune_host_memory_bytes{job="memtune"}')
    assert float(free["value"][1]) >= 0


def test_promtool_check_metrics_passes(stack):
    text = get(f"http://127.0.0.1:{stack['serve_port']}/metrics")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert b"memtune_vm_touch_extra_latency_seconds_bucket" in text


def test_serve_exits_cleanly_on_sigterm(stack):
    serve = stack["serve"]
    assert serve.poll() is None
    assert stop(serve) == 0
    err = serve.stderr.read()
    assert "stopped after 1 run(s)" in err and "Traceback" not in err
    with pytest.raises(OSError):
        get(f"http://127.0.0.1:{stack['serve_port']}/metrics", timeout=2)
