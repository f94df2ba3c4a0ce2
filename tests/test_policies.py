"""Policy model: TOML round trip (property-tested), rule precedence, apply, validation errors."""

from __future__ import annotations

import math
import re

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from memtune.cli import main_group
from memtune.core.memstate import min_free
from memtune.core.names import UNSAFE_CATEGORIES, name_problem
from memtune.core.scenario import load_scenario, scenario_from_dict
from memtune.core.simulation import build_host
from memtune.core.vm import overhead_bytes
from memtune.errors import AdmissionError, ConfigError
from memtune.policies import (
    Percent,
    Policy,
    VMRule,
    active_set_bytes,
    apply_policy,
    load_policy,
    parse_policy_text,
    policy_from_dict,
    resolve_vms,
    validate_policy,
)
from memtune.schema.types import VM_MAX
from memtune.units import GiB, MiB

# --- round trip -----------------------------------------------------------------------------------

sizes = st.integers(min_value=0, max_value=VM_MAX) | st.sampled_from([GiB, 4 * GiB, 512 * MiB, 3 * 1024])
percents = st.floats(min_value=0, max_value=100, allow_nan=False).map(Percent)
texts = st.text(max_size=12)
# names and salts are written into exported files: they hold no control or line-break character
names = st.text(st.characters(exclude_categories=tuple(UNSAFE_CATEGORIES)), min_size=1, max_size=20).filter(
    lambda n: name_problem(n) is None)


@st.composite
def rules(draw, name_strategy):
    name = draw(name_strategy)
    res = draw(st.none() | sizes | percents | st.just("active"))
    lim = draw(st.none() | sizes | percents | st.just("unlimited"))
    if isinstance(res, int) and isinstance(lim, int) and res > lim:
        res, lim = lim, res
    if isinstance(res, Percent) and isinstance(lim, Percent) and res.value > lim.value:
        res, lim = lim, res
    return VMRule(
        name=name, reservation=res, limit=lim,
        shares=draw(st.none() | st.sampled_from(["low", "normal", "high"]) | st.integers(1, 2**40)),
        salt=draw(st.none() | names),
        maxmemctl=draw(st.none() | sizes | percents | st.just("unlimited")))


_word = st.text(alphabet="abcXYZ019_", min_size=1, max_size=8)
setting_names = st.builds(lambda a, b, c: f"{a}.{b}{c}", st.sampled_from(["Mem", "latency", "memtune", "x"]),
                          _word, st.sampled_from(["", ".a", ".Z_9"]))
setting_values = (st.integers(-(2**40), 2**40) | st.booleans() | texts
                  | st.floats(allow_nan=False, allow_infinity=False))
vm_names = st.text(alphabet="abcdefgh-0123456789*?[]", min_size=1, max_size=10)


@st.composite
def policies(draw):
    vms = draw(st.lists(rules(vm_names), max_size=6, unique_by=lambda r: r.name))
    return Policy(name=draw(names), description=draw(texts),
                  settings=draw(st.dictionaries(setting_names, setting_values, max_size=5)),
                  defaults=draw(rules(st.just("*"))), vms=tuple(vms))


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(policies())
def test_round_trip_read_write_read_is_equal(policy):
    text = policy.to_toml()
    again = parse_policy_text(text, "rt.toml")
    assert again == policy
    assert again.to_toml() == text


def test_sizes_are_written_with_exact_units():
    p = Policy("u", vms=(VMRule("a", reservation=4 * GiB, limit=6 * GiB + 1, maxmemctl=Percent(12.5)),))
    text = p.to_toml()
    assert '"sched.mem.min" = "4 GiB"' in text
    assert f'"sched.mem.max" = "{6 * GiB + 1} bytes"' in text
    assert '"sched.mem.maxmemctl" = "12.5%"' in text


def test_units_and_short_names_are_accepted():
    p = policy_from_dict({"name": "x", "vm": [
        {"name": "a", "reservation": "512 MiB", "limit": "2147483648 bytes", "maxmemctl": "1.5 GiB"}]}, "x")
    r = p.vms[0]
    assert (r.reservation, r.limit, r.maxmemctl) == (512 * MiB, 2 * GiB, 1536 * MiB)


# --- precedence -----------------------------------------------------------------------------------

PREC = policy_from_dict({"name": "prec", "defaults": {"shares": "low", "reservation": "256 MiB"}, "vm": [
    {"name": "web-0[12]", "reservation": "2 GiB"},          # longer pattern (9 chars)
    {"name": "web-*", "reservation": "1 GiB", "limit": "5 GiB"},
    {"name": "web-01", "limit": "4 GiB"},                   # exact: beats every pattern
    {"name": "we?-0*", "shares": "high"},                   # 6 chars, earlier
    {"name": "*-04", "shares": 999},                        # 4 chars
    {"name": "web-0*", "shares": "normal"},                 # 6 chars, later: beats we?-0*
]}, "prec.toml")


def test_exact_beats_pattern_longer_beats_shorter_later_beats_earlier():
    vms = {v.name: v for v in resolve_vms(PREC, load_scenario("small"))}
    assert (vms["web-01"].reservation, vms["web-01"].limit) == (2 * GiB, 4 * GiB)
    assert (vms["web-02"].reservation, vms["web-02"].limit) == (2 * GiB, 5 * GiB)
    assert (vms["web-03"].reservation, vms["web-03"].limit) == (1 * GiB, 5 * GiB)
    assert vms["web-03"].shares == "normal"                 # later of two equally long patterns
    assert vms["web-04"].shares == "normal"                 # 6-char pattern beats 4-char "*-04"
    assert vms["db-04"].shares == 999
    assert (vms["db-01"].shares, vms["db-01"].reservation, vms["db-01"].limit) == ("low", 256 * MiB, None)


def test_knobs_no_rule_gives_keep_the_scenario_value():
    data = {"name": "s", "host": {"memory": "16 GiB"}, "vm": [
        {"name": "a", "memory": "4 GiB", "reservation": "1 GiB", "limit": "3 GiB", "shares": "high",
         "salt": "x", "workload": {"wss": 0.25}}]}
    sc = scenario_from_dict(data, "s.toml")
    out = apply_policy(policy_from_dict({"name": "p", "vm": [{"name": "a", "shares": 123}]}, "p"), sc)
    vm = out.vms[0]
    assert (vm.reservation, vm.limit, vm.shares, vm.salt) == (GiB, 3 * GiB, 123, "x")


def test_apply_sets_vm_fields_and_settings():
    sc = load_scenario("small")
    p = policy_from_dict({"name": "p", "settings": {"Mem.ShareForceSalting": 0, "Mem.IdleTax": 50},
                          "vm": [{"name": "db-*", "reservation": "25%", "limit": "90%", "salt": "db",
                                  "maxmemctl": "1 GiB"}]}, "p")
    out = apply_policy(p, sc)
    assert out.settings["Mem.ShareForceSalting"] == 0 and out.settings["Mem.IdleTax"] == 50
    db = [v for v in out.vms if v.name.startswith("db-")]
    assert len(db) == 4
    for v in db:
        assert v.reservation == int(round(6 * GiB * 0.25))
        assert v.limit == int(round(6 * GiB * 0.9))
        assert (v.salt, v.maxmemctl) == ("db", GiB)
    host = build_host(out)
    i = host.vm_names.index("db-02")
    assert host.reservation[i] * host.page_bytes == pytest.approx(1.5 * GiB)
    assert host.settings["Mem.ShareForceSalting"] == 0


# --- "active" reservations ------------------------------------------------------------------------

def test_active_reservation_is_the_peak_working_set_in_mib():
    sc = apply_policy(policy_from_dict({"name": "a", "defaults": {"reservation": "active"}}, "a"),
                      load_scenario("small"))
    got = {v.name.split("-")[0]: v.reservation for v in sc.vms}
    assert got["web"] == 1536 * MiB                       # wss 0.25 of 6 GiB
    assert got["db"] == 3072 * MiB                        # wss 0.5
    assert got["vdi"] == math.ceil(0.2 * 1.4 * 6144) * MiB  # diurnal: wss * (1 + amplitude 0.4)
    assert got["batch"] == math.ceil(0.7 * 6144) * MiB    # phased: largest phase wss 0.7
    host = build_host(sc)
    assert host.powered.all()


def test_active_reservations_scale_down_to_pass_admission():
    data = {"name": "tight", "host": {"memory": "16 GiB"}, "vm": [
        {"name": "big", "count": 4, "memory": "8 GiB", "workload": {"allocated": 0.9, "wss": 0.5}},
        {"name": "fixed", "memory": "2 GiB", "workload": {"wss": 0.5}}]}
    sc = scenario_from_dict(data, "tight.toml")
    p = policy_from_dict({"name": "a", "vm": [{"name": "big-*", "reservation": "active"},
                                              {"name": "fixed", "reservation": "1 GiB"}]}, "a")
    out = apply_policy(p, sc)
    capacity = 16 * GiB - min_free(16 * GiB)
    overhead = 4 * overhead_bytes(8 * GiB) + overhead_bytes(2 * GiB)
    factor = (capacity - overhead - GiB) / (4 * 4 * GiB)    # room left after the fixed reservation
    assert 0.8 < factor < 1
    expect = math.floor(4 * GiB * factor / MiB) * MiB
    assert [v.reservation for v in out.vms] == [expect] * 4 + [GiB]
    assert build_host(out).powered.all()                   # the core's admission control agrees


def test_active_set_never_exceeds_configured():
    sc = load_scenario("small")
    assert all(active_set_bytes(v) <= v.memory for v in sc.vms)


# --- errors: one line naming the field --------------------------------------------------------------

def _err(data, scenario="small", exc=ConfigError):
    with pytest.raises(exc) as info:
        p = policy_from_dict(data, "bad.toml")
        validate_policy(p, load_scenario(scenario) if scenario else None)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("bad.toml: ")
    return msg


@pytest.mark.parametrize("data, field", [
    ({"name": "b", "vm": [{"name": "web-01", "sched.mem.minimum": "1 GiB"}]}, "vm[0].sched.mem.minimum"),
    ({"name": "b", "defaults": {"reservation": "4 parsecs"}}, "defaults.reservation"),
    ({"name": "b", "defaults": {"sched.mem.max": "120%"}}, "defaults.sched.mem.max"),
    ({"name": "b", "defaults": {"shares": "medium"}}, "defaults.shares"),
    ({"name": "b", "vm": [{"name": "a", "reservation": "2 GiB", "limit": "1 GiB"}]}, "vm[0].reservation"),
    ({"name": "b", "vm": [{"name": "a"}, {"name": "a"}]}, "vm[1].name"),
    ({"name": "b", "vm": [{"reservation": 0}]}, "vm[0].name"),
    ({"name": "b", "colour": "red"}, "colour"),
    ({"name": "b", "settings": {"Mem.NoSuchOption": 1}}, "settings.Mem.NoSuchOption"),
    ({"name": "b", "settings": {"Mem.ShareForceSalting": 7}}, "settings.Mem.ShareForceSalting"),
    ({"name": "b", "settings": {"Mem.ShareScanTime": "1h"}}, "settings.Mem.ShareScanTime"),
    ({"name": "b", "vm": [{"name": "web-99", "shares": "high"}]}, "vm[0].name"),
    ({"name": "b", "vm": [{"name": "nosuch-*", "shares": "high"}]}, "vm[0].name"),
    ({"name": "b", "vm": [{"name": "web-*", "limit": "8 GiB"}]}, "vm[0].sched.mem.max"),
    ({"name": "b", "defaults": {"limit": "1 GiB"}, "vm": [{"name": "web-01", "reservation": "2 GiB"}]},
     "vm[0].sched.mem.min"),
])
def test_bad_policies_give_one_line_naming_the_field(data, field):
    msg = _err(data)
    assert msg.startswith(f"bad.toml: {field}: ")


def test_reservation_over_the_scenarios_limit_is_named():
    data = {"name": "s", "host": {"memory": "16 GiB"}, "vm": [
        {"name": "a", "memory": "4 GiB", "limit": "2 GiB", "workload": {"wss": 0.25}}]}
    sc = scenario_from_dict(data, "s.toml")
    with pytest.raises(
        ConfigError,
        match=r"^p.toml: defaults.sched.mem.min: reservation 3 GiB of a is larger "
        r"than its limit 2 GiB$",
    ):
        apply_policy(policy_from_dict({"name": "p", "defaults": {"reservation": "3 GiB"}}, "p.toml"), sc)


def test_over_reserved_host_is_an_admission_error():
    msg = _err(
        {
            "name": "b",
            "vm": [
                {"name": "db-*", "reservation": "6 GiB"},
                {"name": "web-*", "reservation": "6 GiB"},
                {"name": "vdi-*", "reservation": "6 GiB"},
            ],
        },
        exc=AdmissionError,
    )
    # 10 VMs of 6 GiB + overhead fit 64 GiB - minFree, the 11th does not
    assert re.match(r"bad.toml: vm\[2\]\.sched\.mem\.min: admission control: VM 'vdi-03' needs \d+ MiB", msg)


# --- loading and the CLI ------------------------------------------------------------------------------


def _run(args):
    return CliRunner().invoke(main_group, args)


BAD = {
    "unknown-knob.toml": (
        'name = "b"\n[[vm]]\nname = "web-01"\n"sched.mem.minn" = "1 GiB"\n',
        "vm[0].sched.mem.minn: unknown per-VM knob",
    ),
    "wrong-unit.toml": ('name = "b"\n[defaults]\n"sched.mem.min" = "1 GB/s"\n', "defaults.sched.mem.min: "),
    "over-limit.toml": (
        'name = "b"\n[[vm]]\nname = "db-*"\nreservation = "3 GiB"\nlimit = "2 GiB"\n',
        "vm[0].reservation: reservation (3 GiB) is larger than the limit (2 GiB)",
    ),
    "over-reserved.toml": (
        'name = "b"\n[defaults]\nreservation = "5 GiB"\n',
        "defaults.sched.mem.min: admission control: VM 'batch-01'",
    ),
    "unknown-vm.toml": (
        'name = "b"\n[[vm]]\nname = "mail-01"\nshares = "high"\n',
        "vm[0].name: no VM of that name 'mail-01' in scenario 'small'",
    ),
    "unknown-setting.toml": (
        'name = "b"\n[settings]\n"Mem.ShareForceSalt" = 0\n',
        "settings.Mem.ShareForceSalt: unknown host setting",
    ),
    "not-toml.toml": ('name = "b\n', "not valid TOML"),
}


@pytest.mark.parametrize("fname", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "simulate"])
def test_cli_bad_policy_exits_2_with_one_line(tmp_path, fname, command):
    text, expected = BAD[fname]
    path = tmp_path / fname
    path.write_text(text)
    if command == "validate":
        res = _run(["policy", "validate", str(path), "--scenario", "small"])
    else:
        res = _run(["simulate", "small", "--policy", str(path), "--duration", "10s"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output
    assert lines[0].startswith(f"memtune: error: {path}: ")
    assert expected in lines[0]


def test_cli_unknown_policy_name():
    res = _run(["policy", "show", "no-such-preset"])
    assert res.exit_code == 2
    assert res.stderr.strip().startswith(
        "memtune: error: no-such-preset: no such policy file, and not a preset"
    )


def test_cli_validate_show_list(tmp_path):
    res = _run(["policy", "validate", "esxi-default", "--scenario", "small", "--scenario", "vdi"])
    assert res.exit_code == 0 and "valid against small, vdi" in res.output
    res = _run(["policy", "list"])
    assert res.exit_code == 0
    assert [line.split()[0] for line in res.output.splitlines()] == [
        "esxi-default",
        "esxi-legacy-tps",
        "mom-like",
        "no-overcommit-reserve",
    ]
    res = _run(["policy", "show", "no-overcommit-reserve", "--scenario", "small"])
    assert res.exit_code == 0
    assert re.search(r"^# db-01 +6 GiB +3 GiB +unlimited +normal", res.output, re.M)
    shown = res.output.split("\n# applied")[0]
    assert parse_policy_text(shown, "x") == load_policy("no-overcommit-reserve")


def test_cli_simulate_with_policy_runs():
    res = _run(["simulate", "small", "--policy", "esxi-legacy-tps", "--duration", "20s", "--json"])
    assert res.exit_code == 0, res.output
    import json

    out = json.loads(res.stdout)
    assert out["settings"]["Mem.ShareForceSalting"] == 0
