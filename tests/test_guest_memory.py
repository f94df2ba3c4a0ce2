"""Memory inside the guest: a demand above the VM's memory pages to the guest's own disk, page cache
goes first to the balloon, the guest kernel's per-page structures stay with configured memory."""

from __future__ import annotations

import numpy as np
import pytest

from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import simulate
from memtune.core.workload import WorkloadSpec, WorkloadState
from memtune.errors import ConfigError

PAGES = 32768          # 128 MiB


def _state(**kw) -> WorkloadState:
    st = WorkloadState([WorkloadSpec(**kw)], np.array([PAGES]), np.array([0.0]))
    st.advance(1.0)
    return st


def test_a_guest_that_fits_touches_only_memory():
    st = _state(allocated=0.9, wss=0.3, hot_share=0.9, touch_rate=1000.0)
    assert st.overflow_rate[0] == 0.0 and st.rate[0] == 1000.0 and st.allocated[0] == int(0.9 * PAGES)


@pytest.mark.parametrize("wss", [0.5, 1.5])
def test_demand_above_memory_keeps_the_hottest_pages_and_sends_the_rest_to_disk(wss):
    st = _state(allocated=2.0, wss=wss, hot_share=0.8, touch_rate=1000.0)
    demand, c = 2 * PAGES, PAGES
    # the hot window fits: only cold touches beyond memory; it does not: its tail goes too
    q = 0.2 * (1 - c / demand) if wss <= 1 else 1 - (0.8 * c / (wss * PAGES) + 0.2 * c / demand)
    assert st.overflow_rate[0] == pytest.approx(1000.0 * q)
    assert st.rate[0] + st.overflow_rate[0] == pytest.approx(1000.0)
    assert st.allocated[0] == PAGES
    # the engine's touch law over the pages in memory still sums to 1
    p = st.probability(np.zeros(PAGES, dtype=np.int64), np.arange(PAGES))
    assert p.sum() == pytest.approx(1.0, rel=1e-6)


def test_zipf_guest_above_memory_keeps_the_head_of_its_window():
    st = _state(allocated=3.0, wss=2.0, skew="zipf", zipf_s=1.0, hot_share=1.0, touch_rate=1000.0)
    head = np.log1p(PAGES) / np.log1p(2 * PAGES)
    assert st.overflow_rate[0] == pytest.approx(1000.0 * (1 - head), rel=1e-6)


def _scenario(memory: str, workload: dict, settings: dict | None = None, **vm) -> object:
    return scenario_from_dict(
        {
            "name": "g",
            "duration": "4m",
            "warmup": "1m",
            "tick": "1s",
            "seed": 2,
            "host": {"memory": "2 GiB", "page_scale": 4},
            "settings": {"memtune.touch_interval": 1.0, **(settings or {})},
            "vm": [{"name": "vm", "memory": memory, "workload": workload, **vm}],
        },
        "<guest>",
    )


WL = {"allocated": "300 MiB", "wss": "64 MiB", "hot_share": 0.9, "touch_rate": 10000, "write_fraction": 0.1}


@pytest.mark.slow
def test_a_vm_smaller_than_its_working_set_runs_and_stalls_at_the_disk_rate():
    r = simulate(_scenario("128 MiB", WL), pm=build_plugin_manager(entrypoints=False))
    v = r["vms"][0]
    q = 0.1 * (1 - 128 / 300)
    assert v["stall"] == pytest.approx(10000 * q * 160e-6, rel=0.02)
    assert v["counters"]["guest_page_in_bytes"] > 0
    # the statically sized VM with room for it all never stalls on its own disk
    big = simulate(_scenario("512 MiB", WL), pm=build_plugin_manager(entrypoints=False))["vms"][0]
    assert "guest_page_in_bytes" not in big["counters"] and big["stall"] < 0.01


def test_kernel_structures_take_capacity_by_configured_memory():
    st = WorkloadState(
        [WorkloadSpec(allocated=1.0, wss=0.2)], np.array([PAGES]), np.array([0.0]), kernel_share=0.0156
    )
    st.advance(1.0)
    assert st.allocated[0] == int(np.floor(PAGES * (1 - 0.0156)))
    assert st.overflow_rate[0] > 0


@pytest.mark.slow
def test_the_balloon_takes_page_cache_before_anonymous_memory():
    wl = {**WL, "allocated": "200 MiB", "cache": "100 MiB"}
    sc = _scenario("256 MiB", wl, limit="160 MiB")
    r = simulate(sc, pm=build_plugin_manager(disable=["compression", "audit"], entrypoints=False))
    c = r["vms"][0]["counters"]
    assert r["vms"][0]["ballooned"] > 0
    # the cache (100 MiB) covers the balloon and the pages it evicts again: nothing anonymous is written
    assert c["guest_cache_dropped_bytes"] > 0 and c.get("guest_swap_out_bytes", 0) == 0
    # without a page cache the same balloon makes the guest write its anonymous pages out
    r2 = simulate(
        _scenario("256 MiB", {**WL, "allocated": "200 MiB"}, limit="160 MiB"),
        pm=build_plugin_manager(disable=["compression", "audit"], entrypoints=False),
    )
    assert r2["vms"][0]["counters"]["guest_swap_out_bytes"] > 0


@pytest.mark.parametrize(
    "wl, field",
    [
        ({"allocated": 0.5, "cache": 0.6}, "cache"),
        ({"allocated": 17.0}, "allocated"),
        ({"allocated": "3 GiB"}, "allocated"),
    ],
)
def test_bad_guest_memory_fields_name_the_field(wl, field):
    with pytest.raises(ConfigError) as e:
        _scenario("128 MiB", {**WL, **wl})
    assert field in str(e.value)
