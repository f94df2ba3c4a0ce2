"""The registry: plugin contributions collected once per plugin manager, each with its owner."""

from __future__ import annotations

import numpy as np
import pytest

from memtune import hookimpl
from memtune.core.registry import each_plugin, registry_of
from memtune.errors import PluginError
from memtune.plugin import RESIDENT, Knob, Setting
from memtune.testing import plugin_manager, run_with, tiny_scenario


class Parking:
    """A state with its own fault handler, a tier, a setting, a knob and a metric."""

    name = "parking"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = {"settings": 0, "faults": 0}

    @hookimpl
    def memtune_register_settings(self, register):
        self.calls["settings"] += 1
        register(Setting("parking.latency", "seconds", "40us", "fault latency", "test"))

    @hookimpl
    def memtune_register_page_states(self, register):
        register("parked", private_frame=False, mapped=False, fault_allocates=True, fault=self.fault)

    @hookimpl
    def memtune_register_page_out(self, register):
        register("parking", 50, lambda host, pages: np.zeros(pages.size, dtype=bool))

    @hookimpl
    def memtune_register_knobs(self, register, scenario):
        register(Knob("parking.latency", kind="real", low=1e-6, high=1e-4))

    @hookimpl
    def memtune_register_metrics(self, register):
        register("memtune_parking_parked_bytes", "gauge", "Parked.", ["vm"])

    def fault(self, host, pages, write):
        self.calls["faults"] += 1
        if self.fail:
            raise ZeroDivisionError("parking broke")
        host.pages.set_state(pages, RESIDENT)
        return host.settings["parking.latency"]


def test_collected_once_per_plugin_manager_with_owners():
    p = Parking()
    pm = plugin_manager(p, builtins=False)
    reg = registry_of(pm)
    assert registry_of(pm) is reg and p.calls["settings"] == 1
    assert reg.settings["parking.latency"].owner == "parking"
    assert [(s.name, s.owner) for s in reg.states][2:] == [("parked", "parking")]
    assert [(t.name, t.priority, t.owner) for t in reg.tiers] == [("parking", 50, "parking")]
    assert [(m.name, m.owner) for m in reg.metrics] == [("memtune_parking_parked_bytes", "parking")]
    assert [k.name for k in reg.knobs(tiny_scenario()) if k.owner == "parking"] == ["parking.latency"]
    contrib = reg.contributions(tiny_scenario())["parking"]
    assert contrib.page_states[0]["name"] == "parked" and contrib.page_out == [
        {"name": "parking", "priority": 50}
    ]


def test_registering_a_plugin_collects_again():
    pm = plugin_manager(builtins=False)
    before = registry_of(pm)
    assert "parking.latency" not in before.settings
    pm.register_named(Parking(), "parking", "object")
    assert "parking.latency" in registry_of(pm).settings


def test_state_tables_come_from_the_registry():
    reg = registry_of(plugin_manager(Parking(), builtins=False))
    code = reg.states.code("parked")
    assert reg.states.table(RESIDENT, "parked").nonzero()[0].tolist() == [RESIDENT, code]
    assert reg.states.flag_table("read_fault").nonzero()[0].tolist() == [0, code]
    with pytest.raises(ValueError, match="unknown page-state flag"):
        reg.states.flag_table("dirty")


def test_the_fault_handler_a_state_registers_serves_its_faults():
    p = Parking()
    run = run_with(p, builtins=False, scenario=tiny_scenario(duration="10s"))
    host = run.host
    pages = host.pages.base[0] + np.arange(5)
    host.pages.set_state(pages, host.states.code("parked"))
    lat = host.serve_fault(host.states.code("parked"), pages, np.zeros(5, bool))
    assert np.allclose(lat, 40e-6) and lat.shape == (5,) and (host.pages.state[pages] == RESIDENT).all()


def test_a_failing_fault_handler_names_its_plugin():
    run = run_with(Parking(fail=True), builtins=False, scenario=tiny_scenario(duration="10s"))
    host = run.host
    pages = host.pages.base[0] + np.arange(3)
    host.pages.set_state(pages, host.states.code("parked"))
    with pytest.raises(
        PluginError, match=r"plugin 'parking' failed in hook fault handler of page state 'parked'"
    ):
        host.serve_fault(host.states.code("parked"), pages, np.zeros(3, bool))


def test_each_plugin_passes_only_the_arguments_an_implementation_takes():
    class NoScenario:
        name = "noscenario"

        @hookimpl
        def memtune_register_knobs(self, register):
            register(Knob("Mem.IdleTax", kind="int", low=0, high=90))

    pm = plugin_manager(NoScenario(), builtins=False)
    got = each_plugin(
        pm, "memtune_register_knobs", lambda owner: {"register": lambda k: None, "scenario": None}
    )
    assert sorted(owner for owner, _ in got) == ["core", "noscenario"]
