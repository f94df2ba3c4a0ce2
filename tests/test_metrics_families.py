"""Per-VM families held as arrays (memtune.metrics.families): the same exposition as add_metric, the
model's own numbers from the built-in plugins, and the rules a VMFamily keeps."""

from __future__ import annotations

import types

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from memtune import hookimpl
from memtune.core.engine import Engine
from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.errors import PluginError
from memtune.metrics import host_registry
from memtune.metrics.families import VMFamily, vm_counter, vm_gauge

TECHNIQUES = ["balloon", "tps", "ksm", "compression", "swap", "encryption", "audit"]
# awkward VM names: a '%' (the renderer formats with % templates), quotes and a backslash
ODD_NAMES = ['odd%s "q" \\ 100%', "pct%%d"]


def host_of(plugin, name="columns", vms=70, steps=1, disable=TECHNIQUES):
    """A host with ``vms`` small VMs plus two with odd names (more than 64 values per column takes
    the renderer's repeated-values path for plain families)."""
    data = {"name": "families-test", "duration": "1m", "tick": "5s", "seed": 3,
            "host": {"memory": "64 GiB", "page_scale": 256},
            "vm": [{"name": "vm", "count": vms, "memory": "256 MiB"}]
            + [{"name": n, "memory": "256 MiB"} for n in ODD_NAMES]}
    extra = [] if plugin is None else [(name, plugin)]
    pm = build_plugin_manager(disable=disable, entrypoints=False, extra=extra)
    host = build_host(scenario_from_dict(data, "<test>"), pm=pm)
    eng = Engine(host)
    for _ in range(steps):
        eng.step(5.0)
    return host


def columns(n):
    """Values every renderer path must spell alike: whole, fractional, huge, negative, NaN, +-Inf."""
    i = np.arange(n, dtype=np.float64)
    whole = i * 4096.0
    frac = i / 3.0 + 0.1
    odd = whole.copy()
    odd[:6] = [np.nan, np.inf, -np.inf, -2.5, 2.0**60, 1e-7]
    zeros_and_ones = (i % 2 == 0).astype(np.float64)
    return whole, frac, odd, zeros_and_ones


def plain_plugin():
    """What a third-party plugin written against prometheus_client alone returns."""
    mod = types.SimpleNamespace()

    @hookimpl
    def memtune_collect_metrics(host):
        whole, frac, odd, flags = columns(host.nvm)
        a = GaugeMetricFamily("memtune_x_whole_bytes", "Whole numbers.", labels=["vm"])
        b = CounterMetricFamily("memtune_x_frac_seconds_total", "Fractions.", labels=["vm", "dir"])
        c = GaugeMetricFamily("memtune_x_odd", "Odd values.", labels=["vm"])
        d = GaugeMetricFamily("memtune_x_flag", "0 or 1.", labels=["vm"])
        e = GaugeMetricFamily("memtune_x_host_bytes", "A host-level value.", value=12.5)
        for k, name in enumerate(host.vm_names):
            a.add_metric([name], float(whole[k]))
            b.add_metric([name, "in"], float(frac[k]))
            c.add_metric([name], float(odd[k]))
            d.add_metric([name], float(flags[k]))
        for k, name in enumerate(host.vm_names):
            b.add_metric([name, "out"], float(frac[k] * 2))
        return [a, b, c, d, e]

    mod.memtune_collect_metrics = memtune_collect_metrics
    return mod


def column_plugin():
    """The same families built from arrays."""
    mod = types.SimpleNamespace()

    @hookimpl
    def memtune_collect_metrics(host):
        whole, frac, odd, flags = columns(host.nvm)
        names = host.vm_names
        frac_fam = VMFamily("memtune_x_frac_seconds_total", "Fractions.", "counter", names)
        frac_fam.add_column(frac, {"dir": "in"}).add_column(frac * 2, {"dir": "out"})
        return [vm_gauge("memtune_x_whole_bytes", "Whole numbers.", names, whole), frac_fam,
                vm_gauge("memtune_x_odd", "Odd values.", names, odd),
                vm_gauge("memtune_x_flag", "0 or 1.", names, flags.astype(bool)),
                GaugeMetricFamily("memtune_x_host_bytes", "A host-level value.", value=12.5)]

    mod.memtune_collect_metrics = memtune_collect_metrics
    return mod


def parsed(text):
    out = {}
    for f in text_string_to_metric_families(text):
        out[(f.name, f.type, f.documentation)] = sorted(
            (s.name, tuple(sorted(s.labels.items())), repr(float(s.value))) for s in f.samples)
    return out


def test_array_families_render_the_same_text_as_add_metric_families():
    plain = host_registry(host_of(plain_plugin())).render_text()
    fast = host_registry(host_of(column_plugin())).render_text()
    assert fast == plain
    assert 'memtune_x_odd{vm="vm-01"} NaN\n' in fast
    assert 'memtune_x_odd{vm="vm-02"} +Inf\nmemtune_x_odd{vm="vm-03"} -Inf\n' in fast
    assert 'memtune_x_odd{vm="vm-04"} -2.5\n' in fast
    assert 'memtune_x_odd{vm="vm-05"} 1.152921504606847e+18\nmemtune_x_odd{vm="vm-06"} 1e-07\n' in fast
    assert 'memtune_x_odd{vm="vm-07"} 24576.0\n' in fast          # whole, in a column that is not
    assert 'memtune_x_frac_seconds_total{vm="vm-02",dir="in"} 0.43333333333333335\n' in fast
    assert 'memtune_x_whole_bytes{vm="odd%s \\"q\\" \\\\ 100%"} 286720\n' in fast
    assert 'memtune_x_flag{vm="pct%%d"} 0\n' in fast


@pytest.mark.slow
def test_array_families_give_the_same_families_as_add_metric_to_prometheus_client():
    plain = generate_latest(host_registry(host_of(plain_plugin()))).decode()
    fast_reg = host_registry(host_of(column_plugin()))
    assert parsed(generate_latest(fast_reg).decode()) == parsed(plain)
    assert parsed(fast_reg.render_text()) == parsed(plain)


def test_vm_family_samples_equal_add_metric_samples():
    names = ["a", "b%", 'c"']
    values = np.array([1.0, 2.5, np.nan])
    g = GaugeMetricFamily("memtune_x_bytes", "X.", labels=["vm", "kind"])
    c = CounterMetricFamily("memtune_y_bytes_total", "Y.", labels=["vm"])
    for n, v in zip(names, values.tolist(), strict=True):
        g.add_metric([n, "k"], v)
        c.add_metric([n], v)
    fg = vm_gauge("memtune_x_bytes", "X.", names, values, labels={"kind": "k"})
    fc = vm_counter("memtune_y_bytes_total", "Y.", names, values)
    # NaN != NaN: compare the samples' text, then everything but the values
    assert repr(fg.samples) == repr(g.samples) and repr(fc.samples) == repr(c.samples)
    assert (fg.name, fg.type, fg.documentation) == (g.name, g.type, g.documentation)
    assert (fc.name, fc.type, fc.samples[0].name) == ("memtune_y_bytes", "counter", "memtune_y_bytes_total")


def test_vm_family_copies_the_values_it_is_given():
    live = np.array([1.0, 2.0])
    fam = vm_gauge("memtune_x_bytes", "X.", ["a", "b"], live)
    live[:] = 99.0                   # the model moves on after the snapshot
    assert [s.value for s in fam.samples] == [1.0, 2.0]


def test_vm_family_rejects_wrong_lengths_labels_and_types():
    with pytest.raises(ValueError, match="one value per VM"):
        vm_gauge("memtune_x_bytes", "X.", ["a", "b"], np.zeros(3))
    with pytest.raises(ValueError, match="one value per VM"):
        vm_gauge("memtune_x_bytes", "X.", ["a", "b"], np.zeros((2, 1)))
    for bad in ("vm", "le", "__name", "1x", "a-b"):
        with pytest.raises(ValueError, match="invalid label name"):
            vm_gauge("memtune_x_bytes", "X.", ["a"], [1.0], labels={bad: "v"})
    with pytest.raises(ValueError, match="gauge' or 'counter"):
        VMFamily("memtune_x", "X.", "histogram", ["a"])


def test_a_vm_family_of_the_wrong_length_is_a_plugin_error():
    mod = types.SimpleNamespace()

    @hookimpl
    def memtune_collect_metrics(host):
        return [vm_gauge("memtune_x_bytes", "X.", host.vm_names, np.zeros(host.nvm + 1))]

    mod.memtune_collect_metrics = memtune_collect_metrics
    with pytest.raises(PluginError, match="broken.*memtune_collect_metrics"):
        host_registry(host_of(mod, name="broken", vms=2)).render_text()


def test_samples_read_or_changed_before_rendering_are_what_is_rendered():
    mod = types.SimpleNamespace()

    @hookimpl
    def memtune_collect_metrics(host):
        fam = vm_gauge("memtune_x_bytes", "X.", host.vm_names, np.arange(host.nvm, dtype=np.float64))
        assert fam.fast_columns is not None
        fam.samples[0] = fam.samples[0]._replace(value=-1.0)        # a plugin editing the samples
        assert fam.fast_columns is None
        fam.add_column(np.full(host.nvm, 7.0), {"kind": "late"})     # added after: still in samples
        return [fam]

    mod.memtune_collect_metrics = memtune_collect_metrics
    text = host_registry(host_of(mod, vms=2)).render_text()
    assert 'memtune_x_bytes{vm="vm-01"} -1\nmemtune_x_bytes{vm="vm-02"} 1\n' in text
    assert 'memtune_x_bytes{vm="vm-02",kind="late"} 7\n' in text


def test_a_vm_family_over_other_vms_than_the_host_renders_its_own_samples():
    mod = types.SimpleNamespace()

    @hookimpl
    def memtune_collect_metrics(host):
        names = list(reversed(host.vm_names))[:2]
        return [vm_counter("memtune_x_bytes", "X.", names, [5.0, 6.5])]

    mod.memtune_collect_metrics = memtune_collect_metrics
    h = host_of(mod, vms=3)
    fams = {f.name: f for f in text_string_to_metric_families(host_registry(h).render_text())}
    assert {s.labels["vm"]: s.value for s in fams["memtune_x_bytes"].samples} == {
        h.vm_names[-1]: 5.0, h.vm_names[-2]: 6.5}


# --- the built-in plugins export the model's own numbers --------------------------------------------

@pytest.fixture(scope="module")
def busy_host():
    """Overcommitted (12 x 1 GiB guests on 6 GiB): every technique holds pages after a few minutes.
    Touch rates such that the guests fill the host over several ticks: at 20000 / 40000 touches/s
    memory runs out within one 5 s tick, the host goes from high straight to hard and never
    balloons."""
    # inter-VM sharing (salting 0) and a 10-minute scan, so TPS shares pages within the 3 minutes
    data = {"name": "families-busy", "duration": "5m", "tick": "5s", "seed": 11,
            "host": {"memory": "6 GiB", "page_scale": 64},
            "settings": {"Mem.ShareForceSalting": 0, "Mem.ShareScanTime": 10},
            "vm": [{"name": "web", "count": 8, "memory": "1 GiB", "image": "web",
                    "workload": {"allocated": 0.9, "wss": 0.3, "touch_rate": 15000}},
                   {"name": "db", "count": 4, "memory": "1 GiB", "image": "db", "encrypted": True,
                    "workload": {"allocated": 0.95, "wss": 0.5, "touch_rate": 30000}}]}
    # built-ins only: installed third-party plugins (entry points) are not what this checks
    host = build_host(scenario_from_dict(data, "<test>"), pm=build_plugin_manager(entrypoints=False))
    eng = Engine(host)
    for _ in range(36):
        eng.step(5.0)
    return host


def exported(host):
    fams = {f.name: f for f in text_string_to_metric_families(host_registry(host).render_text())}

    def per_vm(name, sample=None):
        got = {s.labels["vm"]: s.value for s in fams[name].samples if s.name == (sample or name)}
        return np.array([got[v] for v in host.vm_names])

    return fams, per_vm


def test_builtin_plugins_export_the_model_numbers(busy_host):
    """The plugins' numbers reach Prometheus once, as core ``memtune_vm_*`` families (page states,
    report columns, ``host.count`` counters); the plugin families that repeated them are gone."""
    from memtune.plugins.tps import sharing_amounts

    h = busy_host
    fams, per_vm = exported(h)
    pb = float(h.page_bytes)
    counts = h.pages.counts
    bal, zipd, swp = (h.plugin_data[k] for k in ("balloon", "compression", "swap"))
    compressed = counts[:, zipd.code] * pb
    expected = {
        "memtune_vm_ballooned_bytes": counts[:, bal.code] * pb,
        "memtune_vm_balloon_max_bytes": bal.cap * pb,
        "memtune_vm_guest_swapped_bytes": counts[:, bal.guest_swapped] * pb,
        "memtune_vm_compressed_bytes": compressed,
        "memtune_vm_compression_cache_bytes": zipd.cache_bytes,
        "memtune_vm_compression_saved_bytes": compressed - zipd.cache_bytes,
        "memtune_vm_swapped_bytes": counts[:, swp.code] * pb,
        "memtune_vm_swap_host_cache_bytes": swp.cache_pages * pb,
        "memtune_encryption_encrypted": h.encrypted.astype(np.float64),
    }
    counters = {
        "balloon_inflated_bytes": "balloon_inflated_bytes",
        "balloon_deflated_bytes": "balloon_deflated_bytes",
        "guest_swap_in_bytes": "guest_swap_in_bytes",
        "compression_bytes": "compression_bytes",
        "decompression_bytes": "decompression_bytes",
        "swap_out_bytes": "swap_out_bytes",
        "swap_in_bytes": "swap_in_bytes",
        "encrypted_swap_in_pages": "encrypted_swap_in_pages",
        "tps_scanned_pages": "tps_scanned_pages",
        "cow_breaks": "cow_breaks",
    }
    for counter, stem in counters.items():
        if counter in h.counters:
            expected[f"memtune_vm_{stem}_total"] = h.counters[counter]
    shared = sharing_amounts(h)
    for key in ("shared", "shared_saved", "shared_consumed", "zero"):
        expected[f"memtune_vm_{key}_bytes"] = shared[key]
    for sample, want in expected.items():
        family = sample.removesuffix("_total")
        got = per_vm(family, sample)
        assert np.array_equal(got, np.asarray(want, dtype=np.float64)), sample
    # the run exercised every technique, so the comparisons above compared numbers, not zeros
    for sample in (
        "memtune_vm_ballooned_bytes",
        "memtune_vm_compressed_bytes",
        "memtune_vm_swapped_bytes",
        "memtune_vm_swap_out_bytes_total",
        "memtune_vm_shared_bytes",
        "memtune_vm_tps_scanned_pages_total",
        "memtune_vm_compression_bytes_total",
        "memtune_vm_balloon_inflated_bytes_total",
        "memtune_encryption_encrypted",
    ):
        assert np.asarray(expected[sample]).any(), sample
    assert fams["memtune_tps_pages_shared"].samples[0].value == h.plugin_data["tps"].frames * h.page_scale
    # no plugin family repeats a core one (docs/metrics.md keeps the old names' mapping)
    gone = [
        n
        for n in fams
        if n.startswith(("memtune_balloon_", "memtune_swap_", "memtune_compression_"))
        or n in ("memtune_tps_shared_bytes", "memtune_tps_scanned_pages", "memtune_encryption_swap_in_pages")
    ]
    assert gone == []


def test_builtin_plugins_return_array_families(busy_host):
    from memtune.testing import collect_metrics

    fams = collect_metrics(busy_host)
    per_vm = {n: f for n, f in fams.items() if any("vm" in s.labels for s in f.samples)}
    assert len(per_vm) >= 1
    plain = sorted(n for n, f in per_vm.items() if not isinstance(f, VMFamily))
    assert plain == []


# --- the renderer's histogram block -----------------------------------------------------------------


def test_histogram_block_spells_counts_as_ints_and_special_sums_as_prometheus_does():
    from memtune.metrics import take_snapshot
    from memtune.metrics.text import render_snapshot

    h = host_of(None, vms=2, steps=2)
    snap = take_snapshot(h)
    name = "memtune_vm_touch_extra_latency_seconds"
    text = render_snapshot(snap)
    count = int(np.rint(snap.hist[0].sum()))
    assert f'{name}_count{{vm="vm-01"}} {count}\n' in text
    assert f'{name}_bucket{{vm="vm-01",le="+Inf"}} {count}\n' in text
    assert f'{name}_sum{{vm="vm-01"}} {float(snap.extra[0])!r}\n' in text
    snap.extra = snap.extra.copy()
    snap.extra[0], snap.extra[1] = np.nan, np.inf
    text = render_snapshot(snap)
    assert f'{name}_sum{{vm="vm-01"}} NaN\n{name}_bucket{{vm="vm-02",le="0.0"}} ' in text
    assert f'{name}_sum{{vm="vm-02"}} +Inf\n' in text
    assert f'{name}_count{{vm="vm-01"}} {count}\n' in text
    assert f'{name}_sum{{vm="odd%s \\"q\\" \\\\ 100%"}} {float(snap.extra[2])!r}\n' in text


def test_columns_reused_between_scrapes_only_while_their_values_stay_the_same():
    mod = types.SimpleNamespace()

    @hookimpl
    def memtune_collect_metrics(host):
        return [
            vm_gauge("memtune_x_half_ticks", "Ticks / 2.", host.vm_names, np.full(host.nvm, host.ticks / 2)),
            vm_gauge("memtune_x_still", "Constant.", host.vm_names, np.ones(host.nvm)),
        ]

    mod.memtune_collect_metrics = memtune_collect_metrics
    h = host_of(mod, vms=2, steps=1)
    reg = host_registry(h)
    engine = Engine(h)
    for _ in range(4):  # 0.5, 1, 1.5, 2: whole and fractional in turn
        text = reg.render_text()
        half = h.ticks / 2
        spelled = str(int(half)) if half.is_integer() else repr(half)
        assert (
            f'memtune_x_half_ticks{{vm="vm-01"}} {spelled}\nmemtune_x_half_ticks{{vm="vm-02"}} {spelled}\n'
            in text
        )
        assert 'memtune_x_still{vm="vm-02"} 1\n' in text
        engine.step(5.0)
