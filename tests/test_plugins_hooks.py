"""One test per hook: a small plugin implements it on a core-only host and the effect is checked.

tests/test_docs.py requires a test named ``test_<hook name>...`` for every hook in the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from memtune import hookimpl
from memtune.core.engine import Engine
from memtune.core.host import Host
from memtune.core.knobs import Knob
from memtune.core.memstate import MemState
from memtune.core.registry import registry_of
from memtune.core.settings import Setting
from memtune.errors import ConfigError
from memtune.testing import plugin_manager, run_with, tiny_scenario

CORE_ONLY = {"builtins": False}


@pytest.mark.slow
def test_memtune_register_settings_declares_a_setting_scenarios_can_set():
    class P:
        name = "p"

        @hookimpl
        def memtune_register_settings(self, register):
            register(Setting("p.window", "seconds", "30s", "a window", "test"))

    run = run_with(P(), **CORE_ONLY)
    assert run.host.settings["p.window"] == 30.0
    assert run.host.registry.settings["p.window"].owner == "p"
    run = run_with(P(), **CORE_ONLY, settings={"p.window": "2m"})
    assert run.host.settings["p.window"] == 120.0
    with pytest.raises(ConfigError, match=r"settings\.p\.window: expected a duration such as"):
        run_with(P(), **CORE_ONLY, settings={"p.window": "soon"})
    with pytest.raises(ConfigError, match=r"settings\.p\.window: unknown setting"):
        run_with(**CORE_ONLY, settings={"p.window": "2m"})


def test_memtune_register_page_states_gets_codes_and_report_columns():
    class P:
        name = "p"

        @hookimpl
        def memtune_register_page_states(self, register):
            self.a = register("alpha", private_frame=False, mapped=False)
            self.b = register("beta", private_frame=True, mapped=True, read_fault=False, write_fault=False,
                              fault_allocates=False)

    p = P()
    run = run_with(p, **CORE_ONLY, duration=4.0)
    assert (p.a, p.b) == (2, 3)        # after the core's free (0) and resident (1)
    st = run.host.states
    assert st[2].name == "alpha" and st[2].owner == "p" and st[2].read_fault
    assert st[3].private_frame and not st[3].read_fault
    assert run.vm(0)["alpha"] == 0.0 and run.vm(0)["beta"] == 0.0


def test_memtune_register_page_out_tiers_are_asked_in_priority_order():
    class Tier:
        def __init__(self, name, priority, keep):
            self.name, self.priority, self.keep, self.seen = name, priority, keep, []

        @hookimpl
        def memtune_register_page_states(self, register):
            self.code = register(self.name)

        @hookimpl
        def memtune_register_page_out(self, register):
            register(self.name, self.priority, self.take)

        def take(self, host, pages):
            self.seen.append(pages.copy())
            got = self.keep(pages)
            host.pages.set_state(pages[got], self.code)
            return got

    low = Tier("low", 20, lambda p: p % 2 == 0)
    high = Tier("high", 50, lambda p: np.ones(p.size, dtype=bool))
    host = Host(tiny_scenario(), plugin_manager(high, low, builtins=False))
    assert [t.name for t in host.tiers] == ["low", "high"]
    pages = np.arange(10, 20)
    host.pages.set_state(pages, host.resident_state())
    taken = host.page_out(pages)
    assert taken.all()
    assert low.seen[0].tolist() == list(range(10, 20))
    assert high.seen[0].tolist() == [11, 13, 15, 17, 19]
    assert host.pages.state[10] == low.code and host.pages.state[11] == high.code
    # `above` skips tiers of lower or equal priority (a tier evicting its own pages)
    more = np.arange(30, 34)
    host.pages.set_state(more, host.resident_state())
    assert host.page_out(more, above=20).all()
    assert len(low.seen) == 1 and high.seen[1].tolist() == [30, 31, 32, 33]


def test_memtune_register_knobs_reaches_the_tuner_space_for_the_scenario():
    from memtune.tuner.space import build_space

    class P:
        name = "p"

        @hookimpl
        def memtune_register_settings(self, register):
            register(Setting("p.rate", "int", 10, "pages per tick", "test", tunable=True))

        @hookimpl
        def memtune_register_knobs(self, register, scenario):
            # a knob that only makes sense for scenarios with more than 2 VMs
            if len(scenario.vms) > 2:
                register(Knob("p.rate", kind="int", low=1, high=len(scenario.vms) * 10))

    pm = plugin_manager(P(), builtins=False)
    space = build_space(tiny_scenario(vms=4), pm)
    dim = {d.name: d for d in space.dimensions}["p.rate"]
    assert (dim.knob.owner, dim.knob.low, dim.knob.high) == ("p", 1, 40)
    assert "p.rate" not in build_space(tiny_scenario(vms=2), pm).names


def test_memtune_register_metrics_are_listed_by_memtune_plugins():
    from memtune.cli.plugins import describe_plugins

    class P:
        name = "p"

        @hookimpl
        def memtune_register_metrics(self, register):
            register("memtune_p_things_total", "counter", "Things.", ["vm"])

    pm = plugin_manager(P(), builtins=False)
    assert registry_of(pm).contributions()["p"].metrics == [
        {"name": "memtune_p_things_total", "type": "counter", "help": "Things.", "labels": ["vm"]}]
    row = [r for r in describe_plugins(pm) if r["name"] == "p"][0]
    assert row["metrics"][0]["name"] == "memtune_p_things_total"
    assert row["hooks"] == ["memtune_register_metrics"]


def test_memtune_configure_runs_once_before_the_first_tick():
    calls = []

    class P:
        name = "p"

        @hookimpl
        def memtune_configure(self, host):
            calls.append(("configure", host.now, host.ticks))
            host.plugin_data["p"] = {"ticks": 0}

        @hookimpl
        def memtune_tick(self, host, now, dt):
            host.plugin_data["p"]["ticks"] += 1

    run = run_with(P(), **CORE_ONLY, duration=10.0)
    assert calls == [("configure", 0.0, 0)]
    assert run.host.plugin_data["p"]["ticks"] == 5


def test_memtune_tick_sees_the_time_at_the_end_of_each_tick():
    seen = []

    class P:
        name = "p"

        @hookimpl
        def memtune_tick(self, host, now, dt):
            seen.append((now, dt, host.now))

    run_with(P(), scenario=tiny_scenario(tick="3s"), **CORE_ONLY, duration=12.0)
    assert seen == [(3.0, 3.0, 0.0), (6.0, 3.0, 3.0), (9.0, 3.0, 6.0), (12.0, 3.0, 9.0)]


@pytest.mark.slow
def test_memtune_reclaim_gets_need_and_later_implementations_see_what_is_left():
    got = []

    class First:
        name = "first"

        @hookimpl(tryfirst=True)
        def memtune_reclaim(self, host, state, need):
            expected = np.floor(np.maximum(host.held() - host.targets, 0.0) + 1e-9)   # whole pages
            assert np.array_equal(need, expected)
            got.append(("first", int(state), need.sum()))
            need *= 0.5                 # pretend to reclaim half

    class Last:
        name = "last"

        @hookimpl(trylast=True)
        def memtune_reclaim(self, host, state, need):
            got.append(("last", int(state), need.sum()))
            need[:] = 0

    run = run_with(Last(), First(), **CORE_ONLY)
    assert run.result["host"]["states_visited"][-1] in ("hard", "low")   # the tiny host is short
    pairs = list(zip(got[::2], got[1::2], strict=True))
    assert pairs and all(a[0] == "first" and b[0] == "last" for a, b in pairs)
    assert all(b[2] == pytest.approx(a[2] / 2) for a, b in pairs)
    assert max(a[2] for a, _ in pairs) > 0
    assert int(MemState.HARD) in {a[1] for a, _ in pairs}


class Parker:
    """Moves vm-01's resident pages to its own faulting state every 10 s; faults cost 5 us."""

    name = "parker"

    def __init__(self):
        self.served = 0

    @hookimpl
    def memtune_register_page_states(self, register):
        register("parked")

    @hookimpl
    def memtune_tick(self, host, now, dt):
        if now % 10 == 0:
            s = host.vm_slice(0)
            idx = np.flatnonzero(host.pages.state[s] == host.resident_state()) + s.start
            host.pages.set_state(idx, host.states.code("parked"))

    @hookimpl
    def memtune_page_fault(self, host, state, pages, write):
        if state != host.states.code("parked"):
            return None
        assert (host.pages.state[pages] == state).all()
        assert (host.pages.vm[pages] == 0).all()
        self.served += pages.size
        host.pages.set_state(pages, host.resident_state())
        return np.full(pages.size, 5e-6)


class Adder:
    name = "adder"

    @hookimpl
    def memtune_fault_latency(self, host, state, pages, latency):
        if state == host.states.code("parked"):
            assert np.allclose(latency, 5e-6)
            return np.full(pages.size, 2e-6)
        return None


def test_memtune_page_fault_serves_the_owners_state():
    parker = Parker()
    run = run_with(parker, **CORE_ONLY, scenario=tiny_scenario(memory="8 GiB"), duration=60.0)
    faults = run.result["vms"]
    assert parker.served > 0
    assert faults[0]["faults"]["parked"] > 0
    assert all(row["faults"]["parked"] == 0 for row in faults[1:])
    # a parked touch costs 5 us: vm-01 pays it, the others only first-touch allocations (1 us)
    assert run.vm(0)["mean_latency"] > run.vm(1)["mean_latency"]
    assert run.host.book.quantile(0.999)[0] >= 4e-6


@pytest.mark.slow
def test_memtune_fault_latency_adds_to_faults_another_plugin_served():
    sc = tiny_scenario(memory="8 GiB")
    plain = run_with(Parker(), **CORE_ONLY, scenario=sc, duration=60.0)
    added = run_with(Parker(), Adder(), **CORE_ONLY, scenario=sc, duration=60.0)
    parked = plain.host.book.faults["parked"]
    assert np.array_equal(parked, added.host.book.faults["parked"])
    assert added.host.book.extra - plain.host.book.extra == pytest.approx(2e-6 * parked, rel=1e-9, abs=1e-15)


def test_memtune_access_overhead_charges_every_touch_of_a_vm():
    class Tax:
        name = "tax"

        @hookimpl
        def memtune_access_overhead(self, host):
            out = np.zeros(host.nvm)
            out[1] = 1e-7
            return out

    sc = tiny_scenario(memory="8 GiB")
    plain = run_with(**CORE_ONLY, scenario=sc, duration=20.0)
    taxed = run_with(Tax(), **CORE_ONLY, scenario=sc, duration=20.0)
    touches = plain.host.book.touches
    assert np.array_equal(touches, taxed.host.book.touches)
    delta = taxed.host.book.extra - plain.host.book.extra
    assert delta == pytest.approx(np.array([0.0, 1e-7, 0.0, 0.0]) * touches, rel=1e-9, abs=1e-15)
    assert taxed.vm(1)["mean_latency"] - plain.vm(1)["mean_latency"] == pytest.approx(1e-7, rel=1e-9)


def test_memtune_event_receives_core_and_plugin_events():
    events = []

    class P:
        name = "p"

        @hookimpl
        def memtune_event(self, host, kind, vm, data):
            events.append((kind, vm, data))

        @hookimpl
        def memtune_tick(self, host, now, dt):
            if now == 4.0:
                host.emit("p-hello", 2, answer=42)

    run_with(P(), **CORE_ONLY, duration=60.0)
    kinds = [e[0] for e in events]
    assert kinds[0] == "policy" and events[0][1] is None
    assert set(events[0][2]["vms"]) == {"vm-01", "vm-02", "vm-03", "vm-04"}
    assert ("p-hello", 2, {"answer": 42}) in events
    changes = [e[2] for e in events if e[0] == "state-change"]
    assert changes and changes[0]["old"] == "high"
    assert all(c["old"] != c["new"] for c in changes)


def test_memtune_vm_columns_appear_in_report_and_timeline():
    class P:
        name = "p"

        @hookimpl
        def memtune_vm_columns(self, host):
            return {"p_bytes": np.arange(host.nvm) * 1000.0 + host.now}

    run = run_with(P(), **CORE_ONLY, duration=60.0)
    assert [run.vm(i)["p_bytes"] for i in range(4)] == [60.0, 1060.0, 2060.0, 3060.0]
    tl = run.result["timeline"]
    assert tl["vm"]["p_bytes"][0] == [2.0, 1002.0, 2002.0, 3002.0]    # first record after tick 1
    assert run.total("p_bytes") == 6240.0


def test_memtune_collect_metrics_families_reach_the_scrape():
    from prometheus_client.core import GaugeMetricFamily

    from memtune.metrics.collector import host_registry

    class P:
        name = "p"

        @hookimpl
        def memtune_collect_metrics(self, host):
            fam = GaugeMetricFamily("memtune_p_ticks", "Ticks seen.", labels=["vm"])
            for name in host.vm_names:
                fam.add_metric([name], float(host.ticks))
            return [fam]

    run = run_with(P(), **CORE_ONLY, duration=10.0)
    reg = host_registry(run.host)
    assert reg.get_sample_value("memtune_p_ticks", {"vm": "vm-03"}) == 5.0


def test_memtune_finish_gets_the_result_being_returned():
    seen = []

    class P:
        name = "p"

        @hookimpl
        def memtune_finish(self, host, result):
            seen.append(result)
            result["p"] = "closed"

    host = Host(tiny_scenario(), plugin_manager(P(), builtins=False))
    result = Engine(host).run(10.0)
    assert len(seen) == 1 and seen[0] is result
    assert result["p"] == "closed" and result["duration"] == 10.0
