"""Presets: they load, round-trip, validate against every built-in scenario and are admitted."""

from __future__ import annotations

import pytest

from memtune.core.host import admission_control
from memtune.core.scenario import builtin_names, load_scenario
from memtune.policies import (
    active_set_bytes,
    apply_policy,
    list_presets,
    load_policy,
    parse_policy_text,
    validate_policy,
)
from memtune.units import MiB

PRESETS = ["esxi-default", "esxi-legacy-tps", "mom-like", "no-overcommit-reserve"]


def test_presets_are_listed():
    assert list_presets() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_round_trips(name):
    p = load_policy(name)
    assert p.name == name and p.description
    assert parse_policy_text(p.to_toml(), "rt") == p


@pytest.mark.slow
@pytest.mark.parametrize("scenario", builtin_names())
@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_and_is_admitted_on_every_builtin(name, scenario):
    sc = load_scenario(scenario)
    out = apply_policy(load_policy(name), sc)
    assert validate_policy(load_policy(name), sc) == out
    needs = [v.reservation + v.overhead for v in out.vms]
    admitted, _ = admission_control(out.host.memory, needs)
    assert admitted.all()
    assert {k: out.settings[k] for k in load_policy(name).settings} == load_policy(name).settings


def test_esxi_presets_differ_only_in_salting():
    a, b = load_policy("esxi-default"), load_policy("esxi-legacy-tps")
    diff = {k for k in a.settings.keys() | b.settings.keys() if a.settings.get(k) != b.settings.get(k)}
    assert diff == {"Mem.ShareForceSalting"}
    assert (a.settings["Mem.ShareForceSalting"], b.settings["Mem.ShareForceSalting"]) == (2, 0)
    assert a.defaults == b.defaults


def test_esxi_default_resets_vms_to_vsphere_defaults():
    out = apply_policy(load_policy("esxi-default"), load_scenario("small"))
    assert {(v.reservation, v.limit, v.shares, v.maxmemctl) for v in out.vms} == {(0, None, "normal", None)}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", builtin_names())
def test_no_overcommit_reserve_reserves_active_sets_or_scales_them_evenly(scenario):
    sc = load_scenario(scenario)
    out = apply_policy(load_policy("no-overcommit-reserve"), sc)
    active = [active_set_bytes(v) for v in sc.vms]
    got = [v.reservation for v in out.vms]
    if got != active:
        # scaled: one common factor f < 1, each reservation floor(active * f) in whole MiB
        f = max(g / a for g, a in zip(got, active, strict=True) if a)
        assert f < 1
        assert all(g % MiB == 0 and a * f - MiB < g <= a * f + 1 for g, a in zip(got, active, strict=True))

