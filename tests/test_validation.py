"""Every number in a scenario or policy means what the user meant, or is refused with one line naming
the file, the field and the value: sizes need a unit, numbers are finite and in range, and the rules
across fields hold (warm-up < duration, reservation <= size, VM <= host unless it says it overcommits)."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from memtune.cli import main_group
from memtune.core.scenario import load_scenario, scenario_from_dict
from memtune.errors import ConfigError
from memtune.policies import policy_from_dict
from memtune.units import GiB, MiB


def base(**top):
    data = {"name": "t", "duration": "10m", "tick": "5s", "warmup": "1m",
            "host": {"memory": "8 GiB"},
            "workloads": {"w": {"allocated": 0.8, "wss": 0.2}},
            "vm": [{"name": "a", "memory": "2 GiB", "workload": "w"}]}
    data.update(top)
    return data


def refused(data, field: str) -> str:
    with pytest.raises(ConfigError) as err:
        scenario_from_dict(data, "t.toml")
    msg = str(err.value)
    assert msg.startswith(f"t.toml: {field}: "), msg
    assert "\n" not in msg
    return msg


# --- sizes need a unit ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [6, 6.0, "6", 6442450944, "6442450944"])
def test_a_size_without_a_unit_is_refused(value):
    data = base()
    data["vm"][0]["memory"] = value
    msg = refused(data, "vm[0].memory")
    assert "unit" in msg and repr(value) in msg


def test_explicit_bytes_are_a_unit():
    data = base()
    data["vm"][0]["memory"] = f"{2 * GiB} bytes"
    data["vm"][0]["reservation"] = "1048576 B"
    vm = scenario_from_dict(data, "t.toml").vms[0]
    assert (vm.memory, vm.reservation) == (2 * GiB, MiB)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 2**40), unit=st.sampled_from(["", " "]))
def test_any_bare_number_is_refused_as_a_size(n, unit):
    data = base()
    data["host"]["memory"] = n if unit == "" else f"{n}{unit}"
    refused(data, "host.memory")


# --- numbers are finite and in range --------------------------------------------------------------

# workload field -> (lowest, highest) allowed
RANGES = {
    "touch_rate": (0.0, 1e8),
    "hot_share": (0.0, 1.0),
    "zipf_s": (0.0, 5.0),
    "write_fraction": (0.0, 1.0),
    "amplitude": (0.0, 1.0),
    "boot_rate": (0.0, 1e4),
    "leak_rate": (0.0, 100.0),
}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, -1.0])
def test_touch_rate_nan_inf_huge_negative_are_refused(value):
    data = base()
    data["workloads"]["w"]["touch_rate"] = value
    refused(data, "workloads.w.touch_rate")


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(sorted(RANGES)),
    value=st.floats(allow_nan=True, allow_infinity=True),
    inline=st.booleans(),
)
def test_workload_numbers_outside_their_range_are_refused(field, value, inline):
    lo, hi = RANGES[field]
    data = base()
    if inline:
        data["vm"][0]["workload"] = {"allocated": 0.8, "wss": 0.2, field: value}
        where = "vm[0].workload"
    else:
        data["workloads"]["w"][field] = value
        where = "workloads.w"
    if math.isfinite(value) and lo <= value <= hi:
        wl = scenario_from_dict(data, "t.toml").vms[0].workload
        assert getattr(wl, field) == value
    else:
        refused(data, f"{where}.{field}")


@settings(max_examples=100, deadline=None)
@given(
    key=st.sampled_from(["duration", "tick", "warmup", "report_interval"]),
    value=st.sampled_from([math.nan, math.inf, -1.0, "-5m", "forever", 1e30]),
)
def test_durations_must_be_finite_non_negative_and_bounded(key, value):
    refused(base(**{key: value}), key)


@pytest.mark.parametrize("field, value", [("seed", -1), ("seed", 2**64), ("seed", 1.5), ("seed", True)])
def test_seed_is_a_non_negative_whole_number(field, value):
    refused(base(**{field: value}), field)


# --- rules across fields --------------------------------------------------------------------------


def test_warmup_must_end_before_the_run():
    refused(base(warmup="10m"), "warmup")
    refused(base(warmup="1h"), "warmup")
    assert scenario_from_dict(base(warmup="9m"), "t.toml").warmup == 540.0


def test_a_vm_larger_than_the_host_needs_allow_overcommit():
    data = base()
    data["vm"][0]["memory"] = "16 GiB"
    msg = refused(data, "vm[0].memory")
    assert "host.allow_overcommit" in msg
    data["host"]["allow_overcommit"] = True
    assert scenario_from_dict(data, "t.toml").vms[0].memory == 16 * GiB


@pytest.mark.parametrize(
    "vm, field",
    [
        ({"reservation": "3 GiB"}, "vm[0].reservation"),
        ({"limit": "3 GiB"}, "vm[0].limit"),
        ({"limit": "1 GiB", "reservation": "1.5 GiB"}, "vm[0].reservation"),
        ({"workload": {"wss": "3 GiB", "allocated": 1.0}}, "vm[0].workload.wss"),
        ({"workload": {"wss": 0.9, "allocated": 0.5}}, "vm[0].workload.wss"),
        ({"workload": {"kind": "phased"}}, "vm[0].workload.phases"),
    ],
)
def test_amounts_must_fit_the_vm(vm, field):
    data = base()
    data["vm"][0].update(vm)
    refused(data, field)


def test_errors_name_the_value_and_what_is_allowed():
    data = base()
    data["workloads"]["w"]["hot_share"] = 1.5
    assert refused(data, "workloads.w.hot_share") == "t.toml: workloads.w.hot_share: must be <= 1.0, got 1.5"
    data = base()
    data["vm"][0]["memory"] = 6
    assert refused(data, "vm[0].memory") == (
        "t.toml: vm[0].memory: expected a size with a unit such as '6 GiB' "
        "or '512 MiB' (plain bytes: '4096 bytes'), got 6"
    )


def test_every_builtin_scenario_still_loads():
    for name in ("small", "vdi", "db", "large", "encrypted-mix"):
        assert load_scenario(name).name == name


# --- policies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2147483648, "2147483648", 1.5, "150%", "nan%", "-1 GiB", True])
def test_policy_amounts_need_a_unit_a_percentage_or_a_keyword(value):
    with pytest.raises(ConfigError) as err:
        policy_from_dict({"name": "p", "defaults": {"sched.mem.max": value}}, "p.toml")
    assert str(err.value).startswith("p.toml: defaults.sched.mem.max: ")


def test_policy_zero_and_keywords_are_accepted():
    p = policy_from_dict(
        {"name": "p", "defaults": {"sched.mem.min": 0, "sched.mem.max": "unlimited", "maxmemctl": "25%"}},
        "p.toml",
    )
    assert (p.defaults.reservation, p.defaults.limit, p.defaults.maxmemctl.value) == (0, "unlimited", 25.0)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_policy_settings_must_be_finite(value):
    with pytest.raises(ConfigError, match=r"^p.toml: settings.Mem.IdleTax: "):
        policy_from_dict({"name": "p", "settings": {"Mem.IdleTax": value}}, "p.toml")


# --- through the CLI: one line, exit 2 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, field",
    [
        (('memory = "2 GiB"', "memory = 6"), "vm[0].memory"),
        (("touch_rate = 1000", "touch_rate = nan"), "workloads.w.touch_rate"),
        (("touch_rate = 1000", "touch_rate = 1e300"), "workloads.w.touch_rate"),
        (('warmup = "1m"', 'warmup = "20m"'), "warmup"),
        (('memory = "2 GiB"', 'memory = "32 GiB"'), "vm[0].memory"),
    ],
)
def test_cli_refuses_with_one_line(tmp_path, edit, field):
    text = (
        'name = "t"\nduration = "10m"\ntick = "5s"\nwarmup = "1m"\n[host]\nmemory = "8 GiB"\n'
        "[workloads.w]\nallocated = 0.8\nwss = 0.2\ntouch_rate = 1000\n"
        '[[vm]]\nname = "a"\nmemory = "2 GiB"\nworkload = "w"\n'
    )
    assert edit[0] in text
    path = tmp_path / "t.toml"
    path.write_text(text.replace(edit[0], edit[1]))
    res = CliRunner().invoke(main_group, ["simulate", str(path)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"memtune: error: {path}: {field}: ")
