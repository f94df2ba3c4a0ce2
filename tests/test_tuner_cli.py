"""`memtune optimize`: a short run end to end; bad flags and files give one line and exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memtune.cli import main_group

FAST = ["--budget", "4", "--batch", "4", "--initial-points", "4", "--repeats", "1", "--duration", "40s",
        "--knobs", "reservation,limit", "--workers", "1", "--no-plots", "--presets", "esxi-default"]


def run(args):
    return CliRunner().invoke(main_group, ["optimize", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def done_run(tiny_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("done") / "o"
    res = run([str(tiny_path), "--out", str(out), *FAST, "--metrics-port", "0"])
    assert res.exit_code == 0, res.output
    return out, res


@pytest.mark.slow
def test_short_run_prints_summary_and_writes_outputs(done_run):
    out, res = done_run
    report = json.loads((out / "report.json").read_text())
    assert report["evaluations"] == 4 and report["stop_reason"] == "budget"
    assert report["space"][0]["name"] == "web.reservation"
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("memtune optimize: tiny-tuner, 4 evaluations")
    assert f"{report['ratio_to_baseline']:.2f}x" in res.output
    assert (out / "best-policy.toml").read_text().startswith('name = "tuned-tiny-tuner"')


@pytest.mark.parametrize("extra, field", [
    (["--budget", "0"], "--budget: must be at least 1"),
    (["--budget", "many"], "--budget: expected a whole number"),
    (["--workers", "0"], "--workers: must be at least 1"),
    (["--optimizer", "bayes"], "--optimizer: expected one of gp, forest, random"),
    (["--objective", "speed"], "--objective: expected one of"),
    (["--objective", "weighted"], "--objective: the weighted objective needs per-VM weights"),
    (["--weight", "web"], "--weight: expected NAME=WEIGHT"),
    (["--weight", "nosuch=2"], "--weight: 'nosuch' is neither a VM nor a VM group"),
    (["--slo-p99", "fast"], "--slo-p99:"),
    (["--time-limit", "0"], "--time-limit: must be greater than zero"),
    (["--duration", "soon"], "--duration:"),
    (["--knobs", "bogus"], "--knobs: 'bogus' matches no knob"),
    (["--fix", "Mem.IdleTax=lots"], "--fix: Mem.IdleTax: expected a number"),
    (["--fix", "Mem.NoSuch=1"], "--fix: 'Mem.NoSuch' is neither a knob nor a host setting"),
    (["--group", "role"], "--group: expected one of prefix, vm, all"),
    (["--presets", "nope"], "--presets: unknown preset 'nope'"),
    (["--disable-plugin", "nosuch"], "unknown plugin 'nosuch'"),
])
def test_bad_flags_one_line_exit_2(tiny_path, tmp_path, extra, field):
    res = run([str(tiny_path), "--out", str(tmp_path / "o"), *FAST, *extra])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memtune: error: ") and field in lines[0], res.output
    assert not (tmp_path / "o" / "journal.jsonl").exists()


def test_bad_files_one_line_exit_2(tiny_path, tmp_path, done_run):
    out, _ = done_run
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[host]\nmemory = "lots"\n[[vm]]\nname = "a"\nmemory = "1 GiB"\n')
    cases = [
        ([str(tmp_path / "missing.toml")], "missing.toml: no such scenario file"),
        ([str(bad)], "bad.toml: host.memory:"),
        ([str(tiny_path), "--out", str(out)], "already holds a tuning run; use --resume"),
        (
            [str(tiny_path), "--out", str(out), "--resume", "--seed", "3"],
            "journal.jsonl: seed: this run's seed (3) differs from the journal's (7)",
        ),
    ]
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases.append(([str(tiny_path), "--out", str(afile)], "--out: cannot create output directory"))
    broken = tmp_path / "broken"
    broken.mkdir()
    journal = (out / "journal.jsonl").read_text()
    line = next(n for n, rec in enumerate(journal.splitlines(), 1) if '"type":"batch"' in rec)
    (broken / "journal.jsonl").write_text(journal.replace('"type":"batch"', "oops", 1))
    cases.append(
        ([str(tiny_path), "--out", str(broken), "--resume"], f"journal.jsonl: line {line}: not a JSON record")
    )
    for args, msg in cases:
        flags = [a for a in FAST] if "--out" in args else ["--out", str(tmp_path / "o"), *FAST]
        res = run([*args, *flags])
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and msg in lines[0], (args, res.output)
