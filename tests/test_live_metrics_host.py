"""Live metrics on this host (root): a real run, scraped on loopback while it runs, exposes every
family and label a simulated run of the same scenario does (but the documented few), and the host
is as before afterwards. Skipped with the reason where live runs cannot happen."""

from __future__ import annotations

import threading
import urllib.request

import pytest
from test_live_host import _run, _scenario, host  # noqa: F401 - the fixture restores-and-compares
from test_live_metrics import families, sim_text

from memtune.core.simulation import build_host
from memtune.live.cgroup import psi_available
from memtune.live.exporter import LiveExporter, serve
from memtune.live.kernel_families import KERNEL_FAMILIES
from memtune.live.snapshot import NOT_MEASURED, unmapped_families
from memtune.metrics import stop_metrics_server

pytestmark = [pytest.mark.live, pytest.mark.integration]


def _scrape_while(exp: LiveExporter, run) -> tuple[list[str], object]:
    server, thread = serve(exp, 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    bodies: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(1.0):
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    body = r.read().decode()
            except OSError as exc:              # kept, so a failing scrape fails the test with its reason
                errors.append(repr(exc))
                continue
            if "memtune_vm_touches_total" in body:
                bodies.append(body)

    t = threading.Thread(target=scrape, daemon=True)
    t.start()
    try:
        result = run()
    finally:
        stop.set()
        t.join(15)
        stop_metrics_server(server, thread)
    assert not errors, errors
    return bodies, result


def test_a_live_run_is_scraped_with_the_simulators_families(host):  # noqa: F811
    vms = [{"name": "free"}, {"name": "limited", "limit": "576 MiB"}]
    sc = _scenario(vms, "8 GiB", 12, wss=0.4, touch_rate=20000, write_fraction=0.2)
    exp = LiveExporter()
    bodies, r = _scrape_while(exp, lambda: _run(sc, observer=exp))
    assert len(bodies) >= 5, f"scraped while the run went: {len(bodies)} scrapes with VM series"
    sim, live = families(sim_text(sc)), families(bodies[-1])
    allowed = set(NOT_MEASURED) | set(unmapped_families(build_host(sc)))
    missing = set(sim) - set(live)
    assert missing <= allowed, missing - allowed
    extra = set(live) - set(sim)
    # the kernel's own (PSI, zswap, zram) and the server process's, as `memtune serve` adds
    extra = {f for f in extra if not f.startswith((*KERNEL_FAMILIES, "process_"))}
    assert all(live[f][0] == "counter" and f.startswith("memtune_vm_") for f in extra), extra
    for name in set(sim) & set(live):
        assert live[name] == sim[name], name
    if psi_available():                   # the kernel's own view: PSI of each VM's group and of the host's
        psi = {"memtune_vm_memory_pressure_seconds_total", "memtune_host_memory_pressure_seconds_total"}
        assert psi <= set(live)
    # the exporter's last tick is the run's end: its touches are the workers' own count
    snap = exp.snapshot
    rows = {row["name"]: row for row in r["vms"]}
    killed = set(r["figures"]["oom_killed"])         # a worker the OOM killer took wrote no statistics
    for v, name in enumerate(snap.vm_names):
        if name not in killed:
            assert snap.touches[v] == pytest.approx(rows[name]["touches"], rel=0.1), name
    limited, free = snap.vm_names.index("limited"), snap.vm_names.index("free")
    major = {k: snap.faults[k] for k in ("swapped", "compressed") if k in snap.faults}
    if "limited" not in killed:
        assert sum(f[limited] for f in major.values()) > sum(f[free] for f in major.values())
