"""Scenario files: built-ins load, bad files end in one line naming file and field, exit 2."""

import pytest
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.core.scenario import builtin_names, load_scenario
from memtune.units import GiB

GOOD = """
name = "t"
duration = "2m"
tick = "5s"
[host]
memory = "8 GiB"
page_scale = 64
[workloads.w]
allocated = 0.5
wss = 0.2
[[vm]]
name = "vm"
count = 2
memory = "2 GiB"
workload = "w"
"""


def run(args):
    return CliRunner().invoke(main_group, args)


def test_builtins_match_their_descriptions():
    assert {"small", "vdi", "db", "large", "encrypted-mix"} <= set(builtin_names())
    small = load_scenario("small")
    assert small.host.memory == 64 * GiB and len(small.vms) == 16
    assert {v.memory for v in small.vms} == {6 * GiB}
    assert sum(v.memory for v in small.vms) / small.host.memory == pytest.approx(1.5)
    assert small.duration == 1800
    assert {v.name.split("-")[0] for v in small.vms} == {"web", "db", "vdi", "batch"}
    vdi = load_scenario("vdi")
    assert vdi.host.memory == 256 * GiB and len(vdi.vms) == 100
    assert {v.workload.kind for v in vdi.vms} == {"boot-storm"} and len({v.image for v in vdi.vms}) == 1
    db = load_scenario("db")
    assert db.host.memory == 128 * GiB and len(db.vms) == 8 and {v.memory for v in db.vms} == {24 * GiB}
    assert all(v.workload.content[3] > 0.9 and v.workload.compressibility[3] >= 0.75 for v in db.vms)
    large = load_scenario("large")
    assert large.host.memory == 1024 * GiB and len(large.vms) == 256 and large.duration == 3600
    enc = load_scenario("encrypted-mix")
    assert sum(v.encrypted for v in enc.vms) == len(enc.vms) // 2


def test_default_scenario_is_small():
    assert load_scenario(None).name == "small"


def test_scenario_cli_list_and_show():
    r = run(["scenario", "list"])
    assert r.exit_code == 0 and "small" in r.output and "256 VMs" in r.output
    r = run(["scenario", "show", "vdi"])
    assert r.exit_code == 0 and 'name = "vdi"' in r.output
    r = run(["scenario", "show", "nope"])
    assert r.exit_code == 2


@pytest.mark.parametrize(
    "mutation, field, words",
    [
        (lambda s: s.replace('memory = "8 GiB"\n', ""), "host.memory", "missing required field"),
        (lambda s: s.replace('memory = "2 GiB"', 'memory = "-2 GiB"'), "vm[0].memory", "negative"),
        (lambda s: s.replace('memory = "2 GiB"', 'memory = "2 parsecs"'), "vm[0].memory", "expected a size"),
        (lambda s: s.replace('memory = "2 GiB"', "memory = true"), "vm[0].memory", "expected a size"),
        (lambda s: s.replace("count = 2", 'count = "two"'), "vm[0].count", "expected a whole number"),
        (
            lambda s: s.replace("count = 2", 'count = 2\nreservation = "3 GiB"'),
            "vm[0].reservation",
            "larger than configured",
        ),
        (
            lambda s: s.replace("count = 2", 'count = 2\nlimit = "1 GiB"\nreservation = "1.5 GiB"'),
            "vm[0].reservation",
            "larger than the limit",
        ),
        (lambda s: s.replace("count = 2", "count = 2\ncolour = 3"), "vm[0].colour", "unknown key"),
        (lambda s: s.replace("wss = 0.2", "wss = 17.0"), "workloads.w.wss", "fraction"),
        (lambda s: s.replace("wss = 0.2", "wss = 1.5"), "workloads.w.wss", "larger than allocated"),
        (
            lambda s: s.replace("wss = 0.2", 'wss = 0.2\nkind = "sometimes"'),
            "workloads.w.kind",
            "expected one of",
        ),
        (lambda s: s.replace('workload = "w"', 'workload = "nope"'), "vm[0].workload", "no workload named"),
        (
            lambda s: s.replace("wss = 0.2", "wss = 0.2\ncontent = { zero = 0.5, unique = 0.2 }"),
            "workloads.w.content",
            "add up to 1",
        ),
        (
            lambda s: s + '\n[settings]\n"Mem.NoSuchThing" = 1\n',
            "settings.Mem.NoSuchThing",
            "unknown setting",
        ),
        (lambda s: s + '\n[settings]\n"Mem.IdleTax" = "lots"\n', "settings.Mem.IdleTax", "whole number"),
        (lambda s: s.replace('tick = "5s"', 'tick = "1h"'), "tick", "longer than the run"),
    ],
)
def test_bad_scenario_files_one_line_exit_2(tmp_path, mutation, field, words):
    path = tmp_path / "bad.toml"
    path.write_text(mutation(GOOD))
    r = run(["simulate", str(path)])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1, r.output
    assert str(path) in lines[0] and field in lines[0] and words in lines[0]
    assert "Traceback" not in r.output


def test_not_toml_and_missing_file(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("this is = = not toml")
    r = run(["simulate", str(path)])
    assert r.exit_code == 2 and "not valid TOML" in r.output and str(path) in r.output
    r = run(["simulate", str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "no such scenario file" in r.output
    bad_admission = GOOD.replace("count = 2", 'count = 2\nreservation = "2 GiB"').replace(
        '"8 GiB"', '"3 GiB"'
    )
    path.write_text(bad_admission)
    r = run(["simulate", str(path)])
    assert r.exit_code == 2 and "admission control" in r.output and "vm-02" in r.output


def test_simulate_table_and_json(tmp_path):
    import json

    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    r = run(["simulate", str(path)])
    assert r.exit_code == 0, r.output
    assert "MEMSZ" in r.output and "vm-01" in r.output and "states visited" in r.output
    r = run(["simulate", str(path), "--json", "--seed", "4", "--duration", "1m"])
    data = json.loads(r.output)
    assert data["seed"] == 4 and data["duration"] == 60
    assert {
        "memsz",
        "target",
        "granted",
        "consumed",
        "active",
        "mean_latency",
        "p99_latency",
        "stall",
    } <= set(data["vms"][0])
    r = run(["simulate", str(path), "--duration", "soon"])
    assert r.exit_code == 2 and "--duration" in r.output
