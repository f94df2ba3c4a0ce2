"""Live metrics with a fake run (no root needed): a live run exposes the simulator's families and
labels, filled from what the run reports; served on loopback while it runs.

The fake run hands the exporter what the Linux driver hands it each tick (control blocks, cgroup
counters, KSM counters, latency books), with numbers chosen so each mapping can be checked.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memtune.core.engine import Engine
from memtune.core.latency import NB
from memtune.core.scenario import load_scenario
from memtune.core.simulation import build_host
from memtune.live.compare import ValidateConfig, scaled
from memtune.live.control import Controller
from memtune.live.control_block import SLOTS
from memtune.live.exporter import LiveExporter, serve
from memtune.live.kernel_families import KERNEL_FAMILIES
from memtune.live.measure import Sample
from memtune.live.observe import RunInfo, TickView
from memtune.live.snapshot import NOT_MEASURED, LiveSnapshots, unmapped_families
from memtune.metrics import host_registry, stop_metrics_server

PAGE = 4096
DISABLE: tuple[str, ...] = ()


def _scenario(mode: str, name: str = "small"):
    sc = scaled(load_scenario(name), ValidateConfig(duration=20, max_vms=4))
    if mode == "ksm":
        sc = sc.replace(settings={**sc.settings, "memtune.sharing": "ksm"})
    return sc


def families(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """family -> (type, label names of its samples)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        labels = frozenset(k for s in fam.samples for k in s.labels if k != "le")
        out[fam.name + ("_total" if fam.type == "counter" else "")] = (fam.type, labels)
    return out


def sim_text(sc) -> str:
    h = build_host(sc, seed=1, disable=DISABLE)
    Engine(h).run()
    return host_registry(h).render_text()


class FakeRun:
    """What the Linux driver hands its observer, tick by tick, with known numbers."""

    def __init__(self, sc, mode: str) -> None:
        self.model = build_host(sc, seed=1, disable=DISABLE)
        self.n = self.model.nvm
        self.controller = Controller(self.model.scenario.replace(settings=dict(self.model.settings)), True)
        self.info = RunInfo(self.model, self.controller, [512 * 1024] * self.n, mode, None, None)
        self.host = {"stored": 0.0, "cache": 0.0, "file": 0.0, "comp_in": 0.0, "all_in": 0.0}

    def view(self, now: float, k: int) -> TickView:
        n = self.n
        ctl = [dict.fromkeys(SLOTS, 0) for _ in range(n)]
        for v, c in enumerate(ctl):
            c.update(ballooned=10 * k + v, resident=1000 + v, active_ppm=250_000, allocated=900,
                     guest_swap_ins=3 * k, guest_swap_outs=5 * k, first_touches=7 * k, free_taken=0)
        held = [(900 + v) * PAGE for v in range(n)]          # 100 pages of each VM merged by KSM
        zram = {"orig_data_size": 3 * 2**20, "compr_data_size": 2**20, "mem_used_total": 2**20 + 4096}
        sample = Sample(now, used=sum(held), other=n * 512 * 1024, zram_used=0, held=held,
                        ksm={"pages_shared": 100, "pages_sharing": 4 * 100 - 100}, zram=zram, swaps={})
        cgroups = [{"pgmajfault": 12 * k, "swap": 64 * PAGE, "pressure": {"some": 0.5 * k, "full": 0.25 * k}}
                   for _ in range(n)]
        hist = np.zeros(NB)
        hist[0], hist[20] = 90 * k, 10 * k
        lat = [np.concatenate([[100.0 * k, 1e-3 * k, now], hist]) for _ in range(n)]
        pages = np.array(held) / PAGE
        self.controller.step(1.0, float(sample.used), pages, np.full(n, 0.25), np.full(n, 900.0))
        return TickView(now, sample, ctl, cgroups, lat, set())


def live_exporter(sc, mode: str, ticks: int = 3, warm_at: int = 0) -> tuple[LiveExporter, FakeRun]:
    run = FakeRun(sc, mode)
    exp = LiveExporter()
    exp.start(run.info)
    exp._builder = LiveSnapshots(run.info, host_reader=lambda info, view: dict(run.host))
    for k in range(ticks):
        run.host.update(stored=3 * 64.0 * PAGE, file=64.0 * PAGE, cache=64.0 * PAGE,
                        comp_in=30.0 * k, all_in=40.0 * k)
        exp.tick(run.view(sc.warmup + k if k >= warm_at else 0.0, k))
    return exp, run


SCENARIOS = [("small", "tps"), ("small", "ksm"), ("db", "tps"), ("vdi", "tps")]


@pytest.mark.parametrize(("name", "mode"), SCENARIOS)
def test_live_exports_the_simulators_families_and_labels(name, mode):
    sc = _scenario(mode, name)
    sim = families(sim_text(sc))
    exp, run = live_exporter(sc, mode)
    live = families(exp.render_text())
    # plugins outside the built-ins (the example page_reporting, where installed) have no live mechanism
    allowed = set(NOT_MEASURED) | set(unmapped_families(run.model))
    missing = set(sim) - set(live)
    assert missing <= allowed, f"not exported live and not documented: {missing - allowed}"
    extra = set(live) - set(sim)
    # only counters the model shows once it has counted something (a short run may not have)
    extra = {f for f in extra if not f.startswith(KERNEL_FAMILIES)}    # the kernel's own: PSI, zswap, zram
    assert all(live[f][0] == "counter" and f.startswith("memtune_vm_") for f in extra), extra
    for name in set(sim) & set(live):
        assert live[name] == sim[name], name
    assert "memtune_vm_touch_extra_latency_seconds" in live and "memtune_host_state" in live


def _values(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_live_values_follow_the_run():
    sc = _scenario("tps")
    exp, run = live_exporter(sc, "tps", ticks=3)
    vals = _values(exp.render_text())
    vm = run.model.vm_names[1]
    k = 2                                               # the last tick; counters from tick 0 (warm)
    assert vals[("memtune_vm_ballooned_bytes", (("vm", vm),))] == (10 * k + 1) * PAGE
    assert vals[("memtune_vm_touches_total", (("vm", vm),))] == 100 * k
    assert vals[("memtune_vm_stall_seconds_total", (("vm", vm),))] == pytest.approx(1e-3 * k)
    assert vals[("memtune_vm_faults_total", (("kind", "free"), ("vm", vm)))] == 7 * k
    # 30 of 40 host swap-ins came from the compressed tier: major faults split 3:1
    assert vals[("memtune_vm_faults_total", (("kind", "compressed"), ("vm", vm)))] == 18
    assert vals[("memtune_vm_faults_total", (("kind", "swapped"), ("vm", vm)))] == 6
    # 3/4 of the host's swapped data is compressed: the cgroup's 64 pages of swap split 48 / 16
    assert vals[("memtune_vm_compressed_bytes", (("vm", vm),))] == 48 * PAGE
    assert vals[("memtune_vm_swapped_bytes", (("vm", vm),))] == 16 * PAGE
    # 100 merged pages; KSM's 100 frames for 400 mappings: a quarter consumed, the rest saved
    assert vals[("memtune_vm_shared_bytes", (("vm", vm),))] == 100 * PAGE
    assert vals[("memtune_vm_shared_saved_bytes", (("vm", vm),))] == 75 * PAGE
    assert vals[("memtune_tps_pages_sharing", ())] == 300
    assert vals[("memtune_vm_touch_extra_latency_seconds_count", (("vm", vm),))] == 100 * k
    assert vals[("memtune_vm_balloon_inflated_bytes_total", (("vm", vm),))] == 10 * k * PAGE
    states = [lab for (name, lab), x in vals.items() if name == "memtune_host_state" and x == 1]
    assert len(states) == 1
    assert vals[("memtune_host_ticks_total", ())] == 3


def test_counters_restart_at_the_end_of_the_warm_up():
    sc = _scenario("tps")
    exp, run = live_exporter(sc, "tps", ticks=4, warm_at=2)   # ticks 0, 1 in the warm-up
    vals = _values(exp.render_text())
    vm = run.model.vm_names[0]
    assert vals[("memtune_vm_faults_total", (("kind", "free"), ("vm", vm)))] == 7 * (3 - 2)


def test_live_metrics_are_served_on_loopback_while_running():
    sc = _scenario("tps")
    exp, _ = live_exporter(sc, "tps", ticks=1)
    server, thread = serve(exp, 0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            body = r.read().decode()
        assert exp.render_text() in body and "process_cpu_seconds_total" in body
    finally:
        stop_metrics_server(server, thread)


def test_textfile_is_rewritten_each_tick(tmp_path):
    sc = _scenario("tps")
    run = FakeRun(sc, "tps")
    out = tmp_path / "live.prom"
    exp = LiveExporter(textfile=out)
    exp.start(run.info)
    exp._builder = LiveSnapshots(run.info, host_reader=lambda info, view: dict(run.host))
    exp.tick(run.view(sc.warmup, 0))
    first = out.read_text()
    exp.tick(run.view(sc.warmup + 1, 1))
    assert out.read_text() != first and "memtune_vm_ballooned_bytes" in out.read_text()


def test_the_kernels_own_families_psi_and_zram():
    sc = _scenario("tps")
    exp, run = live_exporter(sc, "tps", ticks=3)
    vals = _values(exp.render_text())
    vm = run.model.vm_names[0]
    assert vals[("memtune_vm_memory_pressure_seconds_total", (("kind", "some"), ("vm", vm)))] == 1.0
    assert vals[("memtune_vm_memory_pressure_seconds_total", (("kind", "full"), ("vm", vm)))] == 0.5
    assert vals[("memtune_zram_orig_data_size_bytes", ())] == 3 * 2**20
    assert vals[("memtune_zram_mem_used_total_bytes", ())] == 2**20 + 4096


def test_zswap_families_counters_and_gauges():
    from memtune.live.kernel_families import zswap_families

    fams = {f.name: f for f in zswap_families({"zswpout": 10, "stored_bytes": 8192, "pool_total_size": 4096,
                                               "reject_compress_poor": 2})}
    assert fams["memtune_zswap_zswpout"].type == "counter"
    assert fams["memtune_zswap_stored_bytes"].type == "gauge"
    assert fams["memtune_zswap_pool_total_size_bytes"].samples[0].value == 4096
    poor = fams["memtune_zswap_reject_compress_poor"]
    assert poor.samples[0].name == "memtune_zswap_reject_compress_poor_total"


def test_a_textfile_that_cannot_be_written_warns_once_and_the_run_goes_on(tmp_path, capsys):
    sc = _scenario("tps")
    run = FakeRun(sc, "tps")
    exp = LiveExporter(textfile=tmp_path / "gone" / "live.prom")
    exp.start(run.info)
    exp._builder = LiveSnapshots(run.info, host_reader=lambda info, view: dict(run.host))
    exp.tick(run.view(sc.warmup, 0))
    exp.tick(run.view(sc.warmup + 1, 1))
    err = capsys.readouterr().err
    assert err.count("memtune: warning:") == 1 and "does not exist" in err
    assert exp.snapshot is not None and exp.snapshot.ticks == 2


def test_host_psi_family_reads_the_host_cgroups_pressure(tmp_path):
    from memtune.live.kernel_families import host_psi_family

    psi = tmp_path / "memory.pressure"
    assert host_psi_family(psi) is None                       # no live run: no host group
    psi.write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\n"
                   "full avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n")
    fam = host_psi_family(psi)
    assert {s.labels["kind"]: s.value for s in fam.samples} == {"some": 2.5, "full": 0.5}
    assert fam.samples[0].name == "memtune_host_memory_pressure_seconds_total"
