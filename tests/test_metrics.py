"""The Prometheus exposition read back and checked against the model's own numbers."""

from __future__ import annotations

import math
import re
import types

import numpy as np
import pytest
from conftest import build_scenario
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

from memtune import hookimpl
from memtune.core.engine import Engine
from memtune.core.memstate import STATE_NAMES
from memtune.core.pages import RESIDENT
from memtune.core.plugins import build_plugin_manager
from memtune.core.report import vm_amounts
from memtune.core.simulation import build_host
from memtune.core.vm import overhead_bytes
from memtune.errors import PluginError, UserError
from memtune.metrics import TunerMetrics, host_registry, write_textfile
from memtune.metrics.collector import LE_LABELS
from memtune.units import GiB, MiB

TECHNIQUES = ["balloon", "tps", "ksm", "compression", "swap", "encryption", "audit"]


def scenario(host="16 GiB", vms=None, duration="2m", tick="5s", **top):
    vms = vms or [{"name": "web", "count": 2, "memory": "2 GiB",
                   "workload": {"allocated": 0.5, "wss": 0.2, "touch_rate": 10000, "write_fraction": 0.0}},
                  {"name": "db", "memory": "1 GiB", "reservation": "256 MiB",
                   "workload": {"allocated": 0.8, "wss": 0.5, "touch_rate": 30000}}]
    return build_scenario(vms, name="metrics-test", memory=host, duration=duration, tick=tick, seed=7,
                          page_scale=64, tiny_workload=False, vm_defaults={}, report_interval=None,
                          source="<test>", **top)


def run(sc, steps, **kw):
    host = build_host(sc, **kw)
    eng = Engine(host)
    for _ in range(steps):
        eng.step(sc.tick)
    return host


def families(host):
    text = generate_latest(host_registry(host)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def by_label(fam, label="vm", name=None):
    return {s.labels[label]: s.value for s in fam.samples if name is None or s.name == name}


@pytest.fixture(scope="module")
def core_host():
    """Only the core: first-touch faults are the only extra latency (latency.page_alloc)."""
    return run(scenario(), 24, disable=TECHNIQUES)


def test_host_gauges_match_the_model(core_host):
    h = core_host
    fams, _ = families(h)
    assert fams["memtune_host_memory_bytes"].samples[0].value == 16 * GiB
    # minFree sliding scale: 6 % of 4 GiB + 4 % of 8 GiB + 2 % of the remaining 4 GiB
    assert fams["memtune_host_min_free_bytes"].samples[0].value == pytest.approx(
        0.06 * 4 * GiB + 0.04 * 8 * GiB + 0.02 * 4 * GiB, abs=1)
    overhead = 2 * overhead_bytes(2 * GiB) + overhead_bytes(1 * GiB)
    assert fams["memtune_host_overhead_bytes"].samples[0].value == pytest.approx(overhead)
    assert fams["memtune_host_reserved_bytes"].samples[0].value == 256 * MiB
    resident = h.pages.counts[:, RESIDENT].sum() * h.page_bytes
    assert fams["memtune_host_free_bytes"].samples[0].value == pytest.approx(16 * GiB - overhead - resident)
    assert fams["memtune_host_simulated_seconds"].samples[0].value == 120.0
    assert fams["memtune_host_ticks"].samples[0].value == 24
    state = by_label(fams["memtune_host_state"], "state")
    assert state == {s: (1.0 if s == "high" else 0.0) for s in STATE_NAMES}
    seconds = by_label(fams["memtune_host_state_seconds"], "state")
    assert seconds["high"] == 120.0 and sum(seconds.values()) == 120.0


def test_vm_amounts_touches_and_latency_follow_the_model(core_host):
    h = core_host
    fams, _ = families(h)
    configured = by_label(fams["memtune_vm_configured_bytes"])
    assert configured == {"web-01": 2 * GiB, "web-02": 2 * GiB, "db": 1 * GiB}
    assert by_label(fams["memtune_vm_reservation_bytes"])["db"] == 256 * MiB
    assert by_label(fams["memtune_vm_overhead_bytes"])["db"] == overhead_bytes(GiB)
    resident = {n: h.pages.counts[i, RESIDENT] * h.page_bytes for i, n in enumerate(h.vm_names)}
    # no sharing, no pools: granted == consumed == resident pages
    for name in ("memtune_vm_resident_bytes", "memtune_vm_granted_bytes", "memtune_vm_consumed_bytes"):
        assert by_label(fams[name]) == pytest.approx(resident)
    # every VM holds what it touched: at most its allocated share of configured memory
    assert 0 < resident["web-01"] <= 0.5 * 2 * GiB
    # touches: touch_rate x simulated time
    touches = by_label(fams["memtune_vm_touches"])
    assert touches == pytest.approx({"web-01": 10000 * 120, "web-02": 10000 * 120, "db": 30000 * 120})
    # the only faults are first touches, each charged latency.page_alloc (1 us)
    faults = fams["memtune_vm_faults"]
    assert {s.labels["kind"] for s in faults.samples} == {"free"}
    first = by_label(faults)
    hist = fams["memtune_vm_touch_extra_latency_seconds"]
    for vm in ("web-01", "db"):
        buckets = {float(s.labels["le"]): s.value for s in hist.samples
                   if s.name.endswith("_bucket") and s.labels["vm"] == vm}
        count = by_label(hist, name="memtune_vm_touch_extra_latency_seconds_count")[vm]
        total = by_label(hist, name="memtune_vm_touch_extra_latency_seconds_sum")[vm]
        assert len(buckets) == len(LE_LABELS) and buckets[1e-6] > 0
        values = [buckets[b] for b in sorted(buckets)]
        assert values == sorted(values)                      # cumulative
        assert buckets[math.inf] == count == pytest.approx(touches[vm])
        assert buckets[0.0] == pytest.approx(touches[vm] - first[vm])   # free touches cost nothing extra
        assert buckets[1e-6] == pytest.approx(touches[vm])               # 1 us bucket holds the faults
        # fault counts are exported as whole touches: within half a fault of the sum's own count
        alloc = h.settings["latency.page_alloc"]
        assert total == pytest.approx(h.book.faults["free"][h.vm_names.index(vm)] * alloc)
        assert total == pytest.approx(first[vm] * alloc, abs=0.5 * alloc)
    stall = by_label(fams["memtune_vm_stall_ratio"])
    running = by_label(fams["memtune_vm_running_seconds"])
    assert running == {"web-01": 120.0, "web-02": 120.0, "db": 120.0}
    stall_s = by_label(fams["memtune_vm_stall_seconds"])
    assert stall == pytest.approx({k: stall_s[k] / 120.0 for k in stall_s})
    assert all(0 <= v <= 1 for v in stall.values())


def test_names_types_and_units_follow_prometheus_conventions(core_host):
    fams, text = families(core_host)
    for name, fam in fams.items():
        assert name.startswith("memtune_"), name
        assert not any(vm in name for vm in core_host.vm_names)
        if fam.type == "counter":
            assert all(s.name == name + "_total" for s in fam.samples), name
        if name.startswith("memtune_vm_") and fam.type == "gauge" and name not in (
                "memtune_vm_powered_on", "memtune_vm_shares"):
            assert re.search(r"_(bytes|ratio)$", name), name
    assert fams["memtune_vm_touch_extra_latency_seconds"].type == "histogram"
    assert fams["memtune_vm_stall_seconds"].type == "counter"
    info = fams["memtune_build_info"].samples[0]
    assert info.value == 1 and info.labels["version"]
    assert fams["memtune_scenario_info"].samples[0].labels == {"scenario": "metrics-test", "seed": "7"}
    for s in fams["memtune_vm_active_estimate_ratio"].samples:
        assert 0 <= s.value <= 1


def test_same_scenario_and_seed_give_the_same_exposition():
    a = families(run(scenario(), 6))[1]
    b = families(run(scenario(), 6))[1]
    assert a == b


# --- plugin families ------------------------------------------------------------------------

def parking_plugin(metric_name="memtune_parking_lot_bytes"):
    """A third-party plugin with a page state, a report column, a counter and its own family."""
    from prometheus_client.core import GaugeMetricFamily

    mod = types.SimpleNamespace()

    @hookimpl
    def memtune_register_page_states(register):
        register("parked", private_frame=False, mapped=False, read_fault=True, write_fault=True,
                 fault_allocates=True)

    @hookimpl
    def memtune_vm_columns(host):
        return {"parking_fee": np.full(host.nvm, 123.0)}

    @hookimpl
    def memtune_tick(host, now, dt):
        host.count_per_vm("parking_bytes", np.arange(host.nvm, dtype=np.float64) * dt)

    @hookimpl
    def memtune_collect_metrics(host):
        fam = GaugeMetricFamily(metric_name, "Bytes parked.", labels=["vm"])
        for i, name in enumerate(host.vm_names):
            fam.add_metric([name], float(i))
        return [fam]

    for f in (memtune_register_page_states, memtune_vm_columns, memtune_tick, memtune_collect_metrics):
        setattr(mod, f.__name__, f)
    return mod


def host_with(plugin, steps=2):
    pm = build_plugin_manager(disable=TECHNIQUES, entrypoints=False, extra=[("parking", plugin)])
    return run(scenario(), steps, pm=pm)


def test_plugin_states_columns_counters_and_families_are_exported():
    h = host_with(parking_plugin())
    fams, _ = families(h)
    assert by_label(fams["memtune_vm_parked_bytes"]) == {"web-01": 0.0, "web-02": 0.0, "db": 0.0}
    assert by_label(fams["memtune_vm_parking_fee_bytes"]) == {"web-01": 123.0, "web-02": 123.0, "db": 123.0}
    # counted per tick: VM index x dt, two ticks of 5 s
    assert by_label(fams["memtune_vm_parking_bytes"]) == {"web-01": 0.0, "web-02": 10.0, "db": 20.0}
    assert fams["memtune_vm_parking_bytes"].type == "counter"
    assert by_label(fams["memtune_parking_lot_bytes"]) == {"web-01": 0.0, "web-02": 1.0, "db": 2.0}


@pytest.mark.parametrize("bad", ["parking_lot_bytes", "memtune_vm_configured_bytes"])
def test_plugin_family_with_a_bad_or_taken_name_is_a_plugin_error(bad):
    h = host_with(parking_plugin(bad), steps=1)
    with pytest.raises(PluginError, match="parking.*memtune_collect_metrics"):
        generate_latest(host_registry(h))


def test_default_plugins_families_are_exported():
    """Whatever the built-in techniques export through memtune_collect_metrics reaches the scrape."""
    h = run(scenario(host="4 GiB"), 12)
    fams, _ = families(h)
    pm = h.pm
    expected = set()
    for fam_list in pm.hook.memtune_collect_metrics(host=h):
        expected |= {f.name for f in fam_list or []}
    assert expected <= set(fams)
    for key in vm_amounts(h):
        name = "memtune_vm_configured_bytes" if key == "memsz" else f"memtune_vm_{key}_bytes"
        assert name in fams


# --- textfile ---------------------------------------------------------------------------------

def test_textfile_holds_the_same_numbers(core_host, tmp_path):
    path = tmp_path / "memtune.prom"
    write_textfile(core_host, path)
    text = path.read_text()

    def parsed(t):
        return {(f.name, f.type, f.documentation): sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                                                         for s in f.samples)
                for f in text_string_to_metric_families(t)}

    # the fast renderer's text, parsed, is exactly what prometheus_client's generate_latest says
    assert parsed(text) == parsed(families(core_host)[1])
    assert not list(tmp_path.glob("*.tmp*"))


def test_textfile_in_a_missing_directory_is_a_user_error(core_host, tmp_path):
    with pytest.raises(UserError, match="--metrics-out"):
        write_textfile(core_host, tmp_path / "nope" / "m.prom")


def test_simulate_metrics_out_cli(tmp_path):
    from click.testing import CliRunner

    from memtune.cli import main_group

    sc = tmp_path / "s.toml"
    sc.write_text('name = "cli"\nduration = "30s"\ntick = "5s"\n[host]\nmemory = "8 GiB"\npage_scale = 64\n'
                  '[[vm]]\nname = "a"\nmemory = "1 GiB"\n')
    out = tmp_path / "m.prom"
    r = CliRunner().invoke(main_group, ["simulate", str(sc), "--metrics-out", str(out)])
    assert r.exit_code == 0, r.output
    fams = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    assert fams["memtune_host_simulated_seconds"].samples[0].value == 30.0
    assert by_label(fams["memtune_vm_configured_bytes"]) == {"a": GiB}
    r = CliRunner().invoke(main_group, ["simulate", str(sc), "--metrics-out", str(tmp_path / "x" / "m.prom")])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "--metrics-out" in r.output


# --- tuner metrics --------------------------------------------------------------------------------

def test_tuner_metrics_track_evaluations_best_and_infeasible():
    reg = CollectorRegistry()
    tm = TunerMetrics(reg)
    text = generate_latest(reg).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert math.isnan(fams["memtune_tuner_best_objective"].samples[0].value)
    for value in (5.0, 3.0, 4.0):
        tm.observe(value)
    tm.infeasible()
    tm.infeasible(2)
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}

    def value(name, sample=None):
        return next(s.value for s in fams[name].samples if s.name == (sample or name))

    assert value("memtune_tuner_evaluations", "memtune_tuner_evaluations_total") == 3
    assert value("memtune_tuner_infeasible", "memtune_tuner_infeasible_total") == 3
    assert value("memtune_tuner_best_objective") == 3.0
    assert value("memtune_tuner_current_objective") == 4.0
    assert "memtune_build_info" in fams


def test_sample_type_is_prometheus_sample():
    # guards the fast path in the collector that builds Sample tuples directly
    h = run(scenario(), 1, disable=TECHNIQUES)
    fam = next(f for f in host_registry(h).collect() if f.name == "memtune_vm_touches")
    assert isinstance(fam.samples[0], Sample)


# --- fast text exposition -------------------------------------------------------------------------

def parsed(text):
    out = {}
    for f in text_string_to_metric_families(text):
        out[(f.name, f.type, f.documentation)] = sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples)
    return out


@pytest.mark.parametrize("which", ["default-plugins", "third-party"])
def test_fast_text_is_the_same_exposition_as_generate_latest(which):
    h = host_with(parking_plugin(), steps=6) if which == "third-party" else run(scenario(host="4 GiB"), 12)
    reg = host_registry(h)
    fast = reg.render_text()
    slow = generate_latest(reg).decode()
    assert parsed(fast) == parsed(slow)
    assert fast.endswith("\n") and "\n\n" not in fast


def test_fast_text_formats_special_values():
    from memtune.metrics.text import format_values

    assert format_values(np.array([0.0, 4096.0 * 3, 2.0**52])) == ["0", "12288", "4503599627370496"]
    assert format_values(np.array([0.0, 2.0**60])) == ["0.0", repr(2.0**60)]     # beyond exact ints
    assert format_values(np.array([1.0, 2.5, 1e-7])) == ["1.0", "2.5", "1e-07"]
    assert format_values(np.array([np.nan, np.inf, -np.inf, 3.0])) == ["NaN", "+Inf", "-Inf", "3.0"]
    many = np.tile(np.array([0.0, 0.25]), 100)
    assert format_values(many) == ["0.0", "0.25"] * 100


def test_render_is_reused_until_the_host_advances():
    h = run(scenario(), 2, disable=TECHNIQUES)
    reg = host_registry(h)
    first = reg.render_text()
    assert reg.render_text() is first
    Engine(h).step(5.0)
    again = reg.render_text()
    assert again is not first and "memtune_host_ticks_total 3" in again


def test_family_helpers_match_add_metric():
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from memtune.metrics.families import vm_counter, vm_gauge

    names, values = ["a", "b"], np.array([1.0, 2.5])
    g = GaugeMetricFamily("memtune_x_bytes", "X.", labels=["vm"])
    c = CounterMetricFamily("memtune_y_bytes_total", "Y.", labels=["vm"])
    for n, v in zip(names, values, strict=True):
        g.add_metric([n], float(v))
        c.add_metric([n], float(v))
    assert vm_gauge("memtune_x_bytes", "X.", names, values) == g
    assert vm_counter("memtune_y_bytes_total", "Y.", names, values) == c


def test_helper_built_plugin_families_render_like_generate_latest():
    from memtune.metrics.families import vm_counter, vm_gauge

    mod = types.SimpleNamespace()

    @hookimpl
    def memtune_collect_metrics(host):
        values = np.arange(host.nvm, dtype=np.float64) * 4096.0
        return [vm_gauge("memtune_helper_x_bytes", "X.", host.vm_names, values),
                vm_counter("memtune_helper_y_bytes", "Y.", host.vm_names, values / 3, labels={"dir": "in"})]

    mod.memtune_collect_metrics = memtune_collect_metrics
    h = host_with(mod, steps=1)
    reg = host_registry(h)
    fast = reg.render_text()
    assert parsed(fast) == parsed(generate_latest(reg).decode())
    assert 'memtune_helper_y_bytes_total{vm="db",dir="in"} 2730.6666666666665' in fast


def test_plugin_families_are_the_ones_each_plugin_declares():
    """What a plugin returns from memtune_collect_metrics matches its memtune_register_metrics."""
    from memtune.core.registry import registry_of
    from memtune.metrics import take_snapshot

    h = run(scenario(host="4 GiB"), 12)
    declared = {(plugin, m["name"].removesuffix("_total"), m["type"])
                for plugin, c in registry_of(h.pm).contributions().items() for m in c.metrics}
    exported = {(plugin, fam.name, fam.type) for plugin, fam in take_snapshot(h).plugin_families}
    assert exported
    assert exported <= declared, sorted(exported - declared)
