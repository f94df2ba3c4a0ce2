"""A third-party plugin replacing a built-in one: disable `swap`, add `farswap`, which registers its
own page state and page-out tier and reclaims in the hard and low states, on the same hooks."""

from __future__ import annotations

import importlib
import json

import pytest
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.core.memstate import MemState
from memtune.testing import run_with, tiny_scenario

FARSWAP = '''
"""Far-memory swap: replaces the built-in hypervisor swap with a tier in remote memory."""
import numpy as np

from memtune import hookimpl
from memtune.core.memstate import MemState
from memtune.core.settings import Setting

NAME = "farswap"


@hookimpl
def memtune_register_settings(register):
    register(Setting("latency.far_memory", "seconds", 20e-6, "Page fetch from remote memory over RDMA.",
                     "Infiniswap (NSDI 2017): 4 KiB remote page-in in tens of microseconds"))


@hookimpl
def memtune_register_page_states(register):
    register("far", private_frame=False, mapped=False, read_fault=True, write_fault=True,
             fault_allocates=True)


@hookimpl
def memtune_register_page_out(register):
    register("far", 80, take)


@hookimpl
def memtune_configure(host):
    table = np.zeros(256, dtype=bool)
    table[host.resident_state()] = True
    host.plugin_data[NAME] = {"code": host.states.code("far"), "resident": table, "reclaim_states": set(),
                              "out": 0, "in": 0}


def take(host, pages):
    d = host.plugin_data[NAME]
    host.pages.set_state(pages, d["code"])
    d["out"] += pages.size
    return np.ones(pages.size, dtype=bool)


@hookimpl(trylast=True)
def memtune_reclaim(host, state, need):
    if state < MemState.HARD:
        return
    d = host.plugin_data[NAME]
    want = np.where(host.powered, np.ceil(need - 1e-9), 0).astype(np.int64)
    if not (want > 0).any():
        return
    before = host.held()
    victims = host.pages.pick_random(host.rng(NAME), want, d["resident"])
    host.page_out(victims)
    need -= before - host.held()
    np.maximum(need, 0.0, out=need)
    d["reclaim_states"].add(int(state))


@hookimpl
def memtune_page_fault(host, state, pages, write):
    d = host.plugin_data[NAME]
    if state != d["code"]:
        return None
    host.pages.set_state(pages, host.resident_state())
    d["in"] += pages.size
    return np.full(pages.size, host.settings["latency.far_memory"])
'''

TOML = """
name = "squeezed"
duration = "4m"
tick = "2s"
seed = 1
[host]
memory = "2 GiB"
page_scale = 16
[workloads.w]
allocated = 0.8
wss = 0.25
hot_share = 0.9
touch_rate = 20000
write_fraction = 0.2
content = { zero = 0.1, template = 0.3, duplicate = 0.05, unique = 0.55 }
compressibility = { le_1k = 0.25, le_2k = 0.35, le_3k = 0.2, worse = 0.2 }
[[vm]]
name = "vm"
count = 4
memory = "1 GiB"
workload = "w"
image = "tiny-linux"
balloon_driver = false
"""


@pytest.fixture
def farswap(tmp_path, monkeypatch):
    (tmp_path / "farswap.py").write_text(FARSWAP)
    (tmp_path / "squeezed.toml").write_text(TOML)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MEMTUNE_PLUGINS", raising=False)
    monkeypatch.delenv("MEMTUNE_DISABLE_PLUGINS", raising=False)
    module = importlib.import_module("farswap")
    yield module
    import sys

    sys.modules.pop("farswap", None)


def squeezed():
    """Four 1 GiB guests without balloon drivers on a 2 GiB host: only hard-state reclaim helps."""
    return tiny_scenario(duration="4m", memory="2 GiB", vm={"balloon_driver": False})


@pytest.mark.slow
def test_replacement_swap_takes_over_hard_state_reclaim(farswap):
    sc = squeezed()
    replaced = run_with(farswap, scenario=sc, disable=["swap"])
    nothing = run_with(scenario=sc, disable=["swap"])
    host = replaced.host
    assert "swap" not in replaced.plugins and replaced.plugins[-1] == "farswap"
    assert [(t.name, t.priority, t.owner) for t in host.tiers] == [
        ("compression", 10, "compression"),
        ("far", 80, "farswap"),
    ]
    data = host.plugin_data["farswap"]
    # it reclaims only in the hard and low states, and it did reclaim in hard
    assert int(MemState.HARD) in data["reclaim_states"]
    assert data["reclaim_states"] <= {int(MemState.HARD), int(MemState.LOW)}
    # its own state is reported like a built-in one, and the built-in's is gone
    far_pages = host.pages.count(host.states.code("far"))
    assert replaced.total("far") == far_pages.sum() * host.page_bytes > 0
    assert data["out"] - data["in"] == far_pages.sum()
    assert "swapped" not in replaced.vm(0)
    assert replaced.vm(0)["faults"]["far"] > 0
    # compression (priority 10) still sees the victims first and keeps the compressible ones
    assert replaced.total("compressed") > 0
    # with hard-state reclaim back, the host spends less time in low and guests stall less
    t_rep, t_none = replaced.result["host"]["time_in_state"], nothing.result["host"]["time_in_state"]
    assert t_rep["low"] < t_none["low"]
    assert replaced.result["host"]["stall"] < nothing.result["host"]["stall"]


@pytest.mark.slow
def test_replacement_from_the_command_line(farswap, tmp_path):
    r = CliRunner().invoke(
        main_group,
        ["simulate", str(tmp_path / "squeezed.toml"), "--json", "--disable-plugin", "swap", "-p", "farswap"],
    )
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert "swap" not in result["plugins"] and "farswap" in result["plugins"]
    assert result["host"]["totals"]["far"] > 0 and "swapped" not in result["host"]["totals"]
    assert result["settings"]["latency.far_memory"] == 20e-6
