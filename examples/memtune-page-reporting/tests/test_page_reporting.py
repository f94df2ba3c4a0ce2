"""Tests of the free page reporting plugin, written with memtune.testing."""

from __future__ import annotations

import memtune_page_reporting as pr
import numpy as np
import pytest

from memtune.core.engine import Engine
from memtune.core.host import Host
from memtune.testing import collect_knobs, compare, plugin_manager, run_with, tiny_scenario

MiB = 2**20
ON = {"page_reporting.enabled": True}


def boot_storm(**kw):
    """Four 1 GiB guests that zero all their memory at boot (60 s), then keep half of it.

    The 8 GiB host never comes under pressure, so only page reporting gives memory back."""
    return tiny_scenario(memory="8 GiB", workload={"kind": "boot-storm", "allocated": 0.5, "wss": 0.2,
                                                    "boot_time": "60s"}, duration="3m", **kw)


def resident_above_allocated(host) -> np.ndarray:
    out = []
    for v in range(host.nvm):
        st = host.pages.state[host.vm_slice(v)]
        out.append(int((st[host.workload.allocated[v]:] == host.resident_state()).sum()))
    return np.array(out)


def test_budget_is_a_sixteenth_of_free_blocks_rounded_up_to_a_full_request():
    host = Host(tiny_scenario(page_scale=1), plugin_manager(pr, builtins=False))
    free_pages = np.array([0, 256 * 512, 384 * 512, 1])    # 0, 512 MiB, 768 MiB, one 4 KiB page
    # nr_free 2 MiB blocks 0, 256, 384, 0 -> ceil(n / (32 * 16)) * 32 blocks, capped by what is free
    assert pr.report_budget(host, free_pages).tolist() == [0, 32 * 512, 32 * 512, 0]
    free_pages = np.array([1024 * 512])                    # 2 GiB: 1024 blocks -> 2 requests of 32
    assert pr.report_budget(host, free_pages).tolist() == [64 * 512]


def test_disabled_by_default_changes_nothing():
    sc = boot_storm()
    with_plugin = run_with(pr, scenario=sc, builtins=False)
    without = run_with(scenario=sc, builtins=False)
    assert with_plugin.result["host"]["totals"] == without.result["host"]["totals"]
    assert with_plugin.result["host"]["mean_latency"] == without.result["host"]["mean_latency"]
    assert with_plugin.host.plugin_data["page_reporting"]["reported"].sum() == 0


def test_reports_every_guest_free_page_after_a_boot_storm():
    cmp = compare(pr, scenario=boot_storm(), builtins=False, settings=ON)
    w, wo = cmp.with_plugin, cmp.without
    reported = w.host.plugin_data["page_reporting"]["reported"]
    # without reporting the zeroed-then-freed half stays resident; with it none is left
    assert (resident_above_allocated(wo.host) > 256 * MiB / w.host.page_bytes).all()
    assert resident_above_allocated(w.host).tolist() == [0, 0, 0, 0]
    # the pages the guest uses are untouched, so consumed memory drops by exactly what was reported
    for v in range(4):
        a = w.host.workload.allocated[v]
        s = w.host.vm_slice(v)
        assert np.array_equal(w.host.pages.state[s][:a], wo.host.pages.state[s][:a])
    assert -cmp.delta("consumed") == pytest.approx(reported.sum(), abs=0)
    assert reported.tolist() == (resident_above_allocated(wo.host) * w.host.page_bytes).tolist()


def test_one_pass_after_boot_reports_one_request_budget():
    sc = boot_storm()
    host = Host(sc.replace(settings=ON), plugin_manager(pr, builtins=False))
    eng = Engine(host)
    while host.now < 60.0:          # boot: allocated ramps to the whole VM, nothing to report
        eng.step(sc.tick)
    assert host.plugin_data["page_reporting"]["reported"].sum() == 0
    eng.step(sc.tick)               # allocated falls to 512 MiB; one 2 s pass
    # 512 MiB free = 256 blocks of 2 MiB -> ceil(256 / 512) * 32 blocks = 64 MiB per pass
    assert host.plugin_data["page_reporting"]["reported"].tolist() == [64 * MiB] * 4
    assert host.counters["page_reporting_bytes"].tolist() == [64 * MiB] * 4


def test_guests_without_a_balloon_driver_do_not_report_and_get_no_knob():
    sc = boot_storm(vm={"balloon_driver": False})
    run = run_with(pr, scenario=sc, builtins=False, settings=ON)
    assert run.host.plugin_data["page_reporting"]["reported"].sum() == 0
    assert "page_reporting.enabled" not in [k.name for k in collect_knobs(plugin_manager(pr), sc)]


def test_metric_counts_reported_bytes_per_vm():
    from memtune.metrics.collector import host_registry

    run = run_with(pr, scenario=boot_storm(), builtins=False, settings=ON)
    reg = host_registry(run.host)
    reported = run.host.plugin_data["page_reporting"]["reported"]
    for i, name in enumerate(run.host.vm_names):
        assert (
            reg.get_sample_value("memtune_page_reporting_reported_bytes_total", {"vm": name}) == reported[i]
        )
    assert reported.min() > 400 * MiB


def test_knob_is_in_the_tuner_space():
    from memtune.tuner.space import build_space

    space = build_space(boot_storm(), plugin_manager(pr))
    dim = {d.name: d for d in space.dimensions}["page_reporting.enabled"]
    assert dim.knob.owner == "page_reporting"
    assert dim.knob.categories == (False, True)
