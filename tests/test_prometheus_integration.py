"""A fleet: Debian's Prometheus scrapes two `memtune serve` hosts (different scenarios, the same VM
names) and a running `memtune optimize --metrics-port`, with memtune's rules loaded. Every dashboard
query is evaluated for all hosts and for each host: each host keeps its own series (never a sum),
the per-host answer is the all-hosts answer's part for that host, and once the hosts hold their
final state the values equal what each host's own /metrics says.

Needs the ``prometheus`` and ``promtool`` binaries (Debian package ``prometheus``; ``scripts/test``
installs it). Everything runs on free loopback ports with temporary storage and stops at the end.
"""

from __future__ import annotations

import json
import math
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
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from memtune.monitoring import DASHBOARDS as DASHBOARD_DIR
from memtune.monitoring import RULES

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
RATE_INTERVAL = "5s"
SCENARIOS = ("small", "encrypted-mix")     # both have VMs named web-01, db-01 ...
SPEED, RUN = "60", "10m"                   # 10 simulated minutes in 10 s, then the final state is held

if PROMETHEUS is None or PROMTOOL is None:
    pytest.skip("the prometheus/promtool binaries are missing (Debian package 'prometheus'; "
                "scripts/test installs it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_port(proc: subprocess.Popen, stream, pattern: str, timeout: float = 30.0) -> int:
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


def query(prom: str, expr: str, at: float | None = None) -> list:
    params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
    body = json.loads(get(f"{prom}/api/v1/query?" + urllib.parse.urlencode(params)))
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


def memtune(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "memtune", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def start_prometheus(tmp: Path, hosts: list[str], tuner: str) -> subprocess.Popen:
    config = tmp / "prometheus.yml"
    config.write_text(textwrap.dedent(f"""
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        rule_files: ["{RULES}"]
        scrape_configs:
          - job_name: memtune
            static_configs: [{{targets: {json.dumps(hosts)}}}]
          - job_name: memtune-tuner
            static_configs: [{{targets: ["{tuner}"]}}]
    """))
    port = free_port()
    with open(tmp / "prometheus.log", "w") as log:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=log)
    proc.url = f"http://127.0.0.1:{port}"
    return proc


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tiny_path):
    tmp = tmp_path_factory.mktemp("fleet")
    procs: list[subprocess.Popen] = []
    try:
        hosts = {}
        for sc in SCENARIOS:
            p = memtune("serve", sc, "--speed", SPEED, "--duration", RUN, "--once", "--hold", "--port", "0")
            procs.append(p)
            port = read_port(p, p.stderr, r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
            hosts[f"127.0.0.1:{port}"] = p
        tuner_port = free_port()
        tuner = memtune("optimize", str(tiny_path), "--out", str(tmp / "opt"), "--metrics-port",
                        str(tuner_port), "--workers", "1", "--budget", "400", "--initial-points", "4",
                        "--duration", "2m", "--no-plots", "--no-progress")
        procs.append(tuner)
        prom = start_prometheus(tmp, list(hosts), f"127.0.0.1:{tuner_port}")
        procs.append(prom)
        deadline = time.monotonic() + 40
        up = []
        while time.monotonic() < deadline:
            try:
                up = [t for t in json.loads(get(f"{prom.url}/api/v1/targets"))["data"]["activeTargets"]
                      if t["health"] == "up"]
                if len(up) == 3:
                    break
            except OSError:
                pass
            assert prom.poll() is None, (tmp / "prometheus.log").read_text()
            assert tuner.poll() is None, tuner.stderr.read()
            time.sleep(0.3)
        assert len(up) == 3, f"targets not up: {up}"
        yield {"prom": prom.url, "hosts": hosts, "tuner": f"127.0.0.1:{tuner_port}", "serve": procs[0]}
    finally:
        for p in reversed(procs):
            stop(p)


# --- the dashboards' queries --------------------------------------------------------------------------

def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(where, expr) of every panel target and every query variable of a dashboard."""
    dash = json.loads(path.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"{p['title']} / {t['refId']}", t["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)|query_result\((.*)\)", q)
            assert m, q
            out.append((f"variable {var['name']}", m.group(1) or m.group(3)))
    return out


def substitute(expr: str, instance: str, vm: str) -> str:
    return (expr.replace("$__rate_interval", RATE_INTERVAL).replace("$instance", instance)
            .replace("$vm", vm))


def used_metrics(expr: str) -> set[str]:
    return set(re.findall(r"(?<![:\w])(memtune_[a-z0-9_]+)", expr))


def exposed(text: str) -> dict[tuple[str, frozenset], float]:
    """Samples of a /metrics text: (sample name, labels) -> value."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def family_names(text: str) -> set[str]:
    return {n for n, _ in exposed(text)} | {f.name for f in text_string_to_metric_families(text)}


def key(series: dict) -> frozenset:
    return frozenset(series["metric"].items())


def value(series: dict) -> float:
    return float(series["value"][1])


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def vm_choice(prom: str, instance: str, at: float) -> str:
    """What the drill-down's vm variable (All) becomes: its top-10 query's VMs as a regex."""
    got = query(prom, f'topk(10, memtune:vm_stall:ratio_rate1m{{instance=~"{instance}"}})', at)
    return "|".join(sorted({s["metric"]["vm"] for s in got})) or "nothing"


def test_every_query_keeps_hosts_apart_and_each_host_matches_its_part_of_all(fleet):
    prom, hosts = fleet["prom"], list(fleet["hosts"])
    # rate() over 5s and the rules' [1m] windows need a few scrapes: wait for the slowest rule
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = query(prom, "memtune:vm_stall:ratio_rate1m")
        every_host = {s["metric"]["instance"] for s in got} == set(hosts)
        if every_host and query(prom, "memtune_tuner_evaluations_total"):
            break
        time.sleep(0.5)
    time.sleep(3)  # rates over 5 s windows have samples
    at = time.time() - 1.0  # one evaluation time for every query
    texts = {h: get(f"http://{h}/metrics").decode() for h in hosts}
    names = {h: family_names(t) for h, t in texts.items()}
    selections = {"|".join(hosts): hosts, **{h: [h] for h in hosts}}
    checked = 0
    problems: list[str] = []
    # the drill-down's VMs: the fleet's top 10 by stall, the same names on every host
    vm = vm_choice(prom, "|".join(hosts), at)
    assert 1 <= len(vm.split("|")) <= 10
    for path in DASHBOARDS:
        tuner = "tuner" in path.name
        for where, raw in dashboard_queries(path):
            per: dict[str, list] = {}
            for sel, members in ({fleet["tuner"]: [fleet["tuner"]]} if tuner else selections).items():
                got = query(prom, substitute(raw, sel, vm), at)
                per[sel] = got
                label = f"{path.name}: {where} [{'all' if len(members) > 1 else sel}]"
                if where == "variable instance":  # lists every host, and only hosts
                    members = [fleet["tuner"]] if tuner else hosts
                expected = [h for h in members if tuner or used_metrics(raw) <= names[h]]
                seen = {s["metric"].get("instance") for s in got}
                if not got and expected:
                    problems.append(f"{label}: no data")
                # a fleet's top 10 may all be on one host; everything else has every host's series
                if got and (not seen <= set(expected) if "topk(" in raw else seen != set(expected)):
                    problems.append(f"{label}: instances {seen}, expected {set(expected)}")
                checked += 1
            if tuner or where == "variable instance":
                continue
            every = {key(s): value(s) for s in per["|".join(hosts)]}
            for h in hosts:
                mine = {key(s): value(s) for s in per[h]}
                part = {k: v for k, v in every.items() if ("instance", h) in k}
                if "topk(" in raw:  # the fleet's top 10 holds a host's top VMs only
                    ok = all(k in mine and same(v, mine[k]) for k, v in part.items())
                else:
                    ok = part.keys() == mine.keys() and all(same(v, mine[k]) for k, v in part.items())
                if not ok:
                    problems.append(f"{path.name}: {where}: host {h} differs from its part of all hosts")
    assert not problems, "\n".join(problems)
    assert checked > 150, checked


# --- the held final state against each host's /metrics -------------------------------------------------


def final_texts(fleet) -> dict[str, str]:
    """Each host's /metrics once its run has ended and its state is held (two equal reads)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        a = {h: get(f"http://{h}/metrics").decode() for h in fleet["hosts"]}
        time.sleep(1.0)
        b = {h: get(f"http://{h}/metrics").decode() for h in fleet["hosts"]}
        strip = {h: re.sub(r"(?m)^process_.*\n", "", t) for h, t in b.items()}
        if all(re.sub(r"(?m)^process_.*\n", "", a[h]) == strip[h] for h in a):
            time.sleep(2.5)  # Prometheus scrapes the held state and evaluates its rules
            return strip
    raise AssertionError("the hosts did not reach the end of their run")


def recorded(samples: dict, name: str) -> dict[frozenset, float]:
    """The recording rules of rules/memtune.rules.yml over gauges, computed from one host's samples."""

    def pick(metric: str, **match: str) -> dict[frozenset, float]:
        return {
            k: v
            for (n, k), v in samples.items()
            if n == metric and all((a, b) in k for a, b in match.items())
        }

    if name == "memtune:host_state:code":
        codes = {"high": 0, "clear": 1, "soft": 2, "hard": 3, "low": 4}
        return {frozenset(): sum(codes[dict(k)["state"]] * v for k, v in pick("memtune_host_state").items())}
    if name == "memtune:host_free:ratio_min_free":
        return {
            frozenset(): pick("memtune_host_free_bytes")[frozenset()]
            / pick("memtune_host_min_free_bytes")[frozenset()]
        }
    if name == "memtune:vm_reclaimed:bytes":
        out: dict[frozenset, float] = defaultdict(float)
        for m in ("ballooned", "compressed", "swapped"):
            for k, v in pick(f"memtune_vm_{m}_bytes").items():
                out[k] += v
        return dict(out)
    raise KeyError(name)


SIMPLE = re.compile(r"(?:(sum|count|max) by \(([^)]*)\) \()?([a-z_:]+)\{([^}]*)\}\)?(?: \* ([0-9.]+))?")


def evaluate(expr: str, samples: dict) -> dict[frozenset, float] | None:
    """The value of a gauge query over one host's samples, for the shapes the dashboards use
    (selector, selector * k, sum/count/max by (...) (selector)); None for anything else."""
    m = SIMPLE.fullmatch(expr)
    if not m:
        return None
    agg, by, name, matchers, factor = m.groups()
    want = dict(re.findall(r'(\w+)="([^"]*)"', matchers))
    regex = dict(re.findall(r'(\w+)=~"([^"]*)"', matchers))
    regex.pop("instance", None)
    if name.startswith("memtune:"):
        series = recorded(samples, name)
    else:
        series = {k: v for (n, k), v in samples.items() if n == name}
    series = {
        k: v
        for k, v in series.items()
        if all((a, b) in k for a, b in want.items() if a != "instance")
        and all(re.fullmatch(r, dict(k).get(a, "")) for a, r in regex.items())
    }
    if agg:
        keep = [x.strip() for x in by.split(",") if x.strip() not in ("instance", "job")]
        out: dict[frozenset, list[float]] = defaultdict(list)
        for k, v in series.items():
            out[frozenset((a, b) for a, b in k if a in keep)].append(v)
        fn = {"sum": sum, "count": len, "max": max}[agg]
        series = {k: float(fn(v)) for k, v in out.items()}
    return {k: v * float(factor) if factor else v for k, v in series.items()}


def test_each_host_in_prometheus_is_what_its_own_metrics_say(fleet):
    prom = fleet["prom"]
    texts = final_texts(fleet)
    checked = 0
    problems: list[str] = []
    for h, text in texts.items():
        samples = exposed(text)
        # every memtune sample, as Prometheus holds it
        held = {}
        for s in query(prom, f'{{__name__=~"memtune_.+", instance="{h}"}}'):
            labels = {k: v for k, v in s["metric"].items() if k not in ("instance", "job", "__name__")}
            held[(s["metric"]["__name__"], frozenset(labels.items()))] = value(s)
        mine = {k: v for k, v in samples.items() if k[0].startswith("memtune_")}
        assert held.keys() == mine.keys()
        assert all(same(held[k], v) for k, v in mine.items())
        # every dashboard query whose value follows from gauges alone
        vm = "|".join(sorted({dict(k)["vm"] for (n, k) in samples if n == "memtune_vm_configured_bytes"}))
        for path in DASHBOARDS:
            if "tuner" in path.name:
                continue
            for where, raw in dashboard_queries(path):
                expr = substitute(raw, h, vm)
                want = evaluate(expr, samples)
                if want is None:
                    continue
                got = {
                    frozenset(
                        (a, b) for a, b in s["metric"].items() if a not in ("instance", "job", "__name__")
                    ): value(s)
                    for s in query(prom, expr)
                }
                if got.keys() != want.keys() or not all(same(got[k], v) for k, v in want.items()):
                    problems.append(f"{h} {path.name}: {where}: Prometheus {got} vs /metrics {want}")
                checked += 1
    assert not problems, "\n".join(problems[:20])
    assert checked >= 2 * 40, checked  # both hosts, most of the gauge panels and variables


def test_promtool_check_metrics_passes_and_the_process_is_exported(fleet):
    for h in fleet["hosts"]:
        text = get(f"http://{h}/metrics")
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)
        assert r.returncode == 0, (r.stdout + r.stderr).decode()
        assert b"memtune_vm_touch_extra_latency_seconds_bucket" in text
        assert b"\nprocess_resident_memory_bytes " in text and b"\nprocess_cpu_seconds_total " in text
    tuner = get(f"http://{fleet['tuner']}/metrics")
    assert b"memtune_tuner_evaluations_total" in tuner and b"process_open_fds" in tuner


def test_serve_exits_cleanly_on_sigterm(fleet):
    serve = fleet["serve"]
    port = next(iter(fleet["hosts"]))
    assert serve.poll() is None
    assert stop(serve) == 0
    err = serve.stderr.read()
    assert "stopped after 1 run(s)" in err and "Traceback" not in err
    with pytest.raises(OSError):
        get(f"http://{port}/metrics", timeout=2)
