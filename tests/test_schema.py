"""`memtune schema scenario|policy` prints a JSON Schema that accepts every built-in scenario and preset
and rejects what the loaders refuse (a size without a unit, an unknown key, a fraction above 1)."""

from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.core.scenario import builtin_names, builtin_text
from memtune.policies import list_presets, preset_text


def schema(kind: str) -> dict:
    res = CliRunner().invoke(main_group, ["schema", kind])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    jsonschema.Draft202012Validator.check_schema(out)
    return out


@pytest.fixture(scope="module")
def scenario_schema():
    return schema("scenario")


@pytest.fixture(scope="module")
def policy_schema():
    return schema("policy")


@pytest.mark.slow
def test_every_builtin_scenario_fits_the_schema(scenario_schema):
    for name in builtin_names():
        jsonschema.validate(tomllib.loads(builtin_text(name)), scenario_schema)


@pytest.mark.slow
def test_every_preset_fits_the_schema(policy_schema):
    for name in list_presets():
        jsonschema.validate(tomllib.loads(preset_text(name)), policy_schema)


@pytest.mark.slow
@pytest.mark.parametrize("edit", [
    lambda d: d["host"].update(memory=6),
    lambda d: d["host"].update(colour="red"),
    lambda d: d["vm"][0].update(memory="6 parsecs"),
    lambda d: d["vm"][0].update(count=0),
    lambda d: d.update(seed=-1),
    lambda d: d["workloads"][next(iter(d["workloads"]))].update(wss=17.0),      # demand is at most 16x
    lambda d: d["workloads"][next(iter(d["workloads"]))].update(touch_rate=1e300),
])
def test_schema_rejects_what_the_loader_refuses(scenario_schema, edit):
    data = tomllib.loads(builtin_text("small"))
    edit(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, scenario_schema)


@pytest.mark.slow
def test_policy_schema_rejects_a_bare_size_and_knows_both_knob_names(policy_schema):
    jsonschema.validate(
        {"name": "p", "defaults": {"reservation": "1 GiB", "sched.mem.max": "50%"}}, policy_schema
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "p", "defaults": {"sched.mem.min": 1024}}, policy_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "p", "defaults": {"sched.mem.minimum": "1 GiB"}}, policy_schema)


def test_unknown_schema_kind_is_a_usage_error():
    res = CliRunner().invoke(main_group, ["schema", "bogus"])
    assert res.exit_code == 2


def test_a_unit_error_names_the_value_once(tmp_path):
    """A size with an unknown unit said "got '1 PiB', got '1 PiB'": the schema appended the value to a
    message that held it already."""
    from memtune.core.scenario import load_scenario
    from memtune.errors import ConfigError

    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[host]\nmemory = "1 PiB"\n[[vm]]\nname = "a"\nmemory = "1 GiB"\n'
                    'workload = {kind = "constant", wss = 0.5, touch_rate = 1000}\n')
    with pytest.raises(ConfigError) as exc:
        load_scenario(path)
    assert str(exc.value).count("1 PiB") == 1, str(exc.value)
