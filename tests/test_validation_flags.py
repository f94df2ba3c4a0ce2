"""Out-of-range flags are usage errors (one line naming the flag, exit 2) before any work starts:
nothing is simulated, no output directory is written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from memtune.cli import main_group


def refused(args, flag):
    res = CliRunner().invoke(main_group, args)
    assert res.exit_code == 2, (args, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert lines[0].startswith(f"memtune: error: {flag}: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("value", ["-1", "1.5", "x", str(2**64)])
@pytest.mark.parametrize("command", [["simulate", "small"], ["serve", "small", "--once"],
                                     ["optimize", "small", "--budget", "2"]])
def test_seed_must_be_a_non_negative_whole_number(tmp_path, command, value):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command[0] == "optimize" else []
    refused([*command, *extra, "--seed", value], "--seed")
    assert not out.exists()


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "-inf", "fast"])
def test_serve_speed_must_be_finite_and_positive(value):
    refused(["serve", "small", "--once", "--speed", value], "--speed")


@pytest.mark.parametrize("flag, value", [("--metrics-port", "99999"), ("--metrics-port", "-1"),
                                         ("--metrics-port", "http")])
def test_optimize_metrics_port_must_be_a_tcp_port(tmp_path, flag, value):
    out = tmp_path / "out"
    refused(["optimize", "small", "--out", str(out), flag, value], flag)
    assert not out.exists()


def test_serve_port_must_be_a_tcp_port():
    refused(["serve", "small", "--once", "--port", "70000"], "--port")


@pytest.mark.parametrize(
    "fix, words",
    [
        ("Mem.IdleTax=500", "must be <= 99"),
        ("Mem.IdleTax=-5", "must be >= 0"),
        ("Mem.IdleTax=nan", "finite"),
        ("Mem.ShareScanTime=inf", "finite"),
        ("Mem.IdleTax=lots", "expected a number"),
    ],
)
def test_optimize_fix_outside_the_settings_range_is_refused_before_any_evaluation(tmp_path, fix, words):
    out = tmp_path / "out"
    line = refused(["optimize", "small", "--out", str(out), "--budget", "4", "--fix", fix], "--fix")
    assert fix.split("=")[0] in line and words in line
    assert not (out / "journal.jsonl").exists()


# --duration is held to the scenario file's rules (at least a tick, at most a year): `small` ticks every
# 5 s. Before, `--duration 1e300s` never ended and `--duration 1` printed statistics of an empty window.
@pytest.mark.parametrize(
    "value, words",
    [("1", "shorter than one tick"), ("5us", "shorter than one tick"), ("0", "greater than zero"),
     ("1e300s", "at most 366 days"), ("400d", "at most 366 days")],
)
@pytest.mark.parametrize("command", [["simulate", "small"], ["serve", "small", "--once"]])
def test_duration_shorter_than_a_tick_or_longer_than_a_year_is_refused(command, value, words):
    line = refused([*command, "--duration", value], "--duration")
    assert words in line, line


def test_a_run_shorter_than_the_warm_up_measures_after_its_first_third():
    """`small` warms up for 5 minutes; a 30 s run measures from 10 s on, as `optimize` does, and says so
    (before, it printed "30 s simulated (statistics after 300 s warm-up)" over an empty window)."""
    res = CliRunner().invoke(main_group, ["simulate", "small", "--duration", "30s"])
    assert res.exit_code == 0, res.output
    assert "30 s simulated (statistics after 10 s warm-up)" in res.output


def test_every_whole_number_option_has_a_range():
    """A plain ``type=int`` option takes -1 or 10**30 and fails deep inside (``profile --seed -1``
    ended in an internal error): every integer option is a ranged ``params.Int`` or ``click.IntRange``."""
    import click

    from memtune.cli.params import Int

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(None):
                yield from walk(cmd.get_command(None, name), (*path, name))
            return
        for p in cmd.params:
            ranged = isinstance(p.type, click.IntRange) and None not in (p.type.min, p.type.max)
            if isinstance(p, click.Option) and isinstance(p.type, click.types.IntParamType) and not ranged:
                yield " ".join(path), p.opts[-1]
            elif isinstance(p, click.Option) and isinstance(p.type, Int):
                assert p.type.minimum is not None, (path, p.opts)

    assert list(walk(main_group, ())) == []
