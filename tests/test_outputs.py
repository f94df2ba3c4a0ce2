"""What a tuning run writes survives a full disk: files are written whole or not at all, in order of
value (journal, best policy, report.json, plots), and the error says which files were kept.

The in-process tests make one file's write fail half-way (ENOSPC after some bytes); the tmpfs tests
(root only) fill a real small file system under ``memtune optimize``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memtune.core.scenario import load_scenario
from memtune.errors import OutputError
from memtune.tuner.loop import JOURNAL, TuneConfig, Tuner
from memtune.tuner.outdir import Outputs
from memtune.tuner.report import write_outputs

ORDER = ["best-policy.toml", "report.json", "convergence.png", "vm-latency.png", "knobs.png"]


@pytest.fixture(scope="module")
def finished(tiny_path, tmp_path_factory):
    """A finished tiny run (its journal closed) and its comparison, to write outputs from."""
    out = tmp_path_factory.mktemp("run")
    config = TuneConfig(load_scenario(tiny_path), budget=6, batch=3, repeats=1, initial_points=3,
                        knobs=("reservation", "limit"), duration=40.0, presets=("esxi-default",))
    tuner = Tuner(config, out)
    tuner.run()
    comparison = tuner.compare(tuner.best())
    tuner.journal.close()
    return tuner, comparison


def _full_disk_at(monkeypatch, target: str) -> None:
    """Writing ``target`` fails like a full disk after its first bytes reached the file."""
    real = Outputs.write_with

    def write_with(self, name, fill):
        if name != target:
            return real(self, name, fill)

        def partial(f):
            f.write(b"\x89PNG partial" if name.endswith(".png") else b"{\"partial\": ")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real(self, name, partial)

    monkeypatch.setattr(Outputs, "write_with", write_with)


@pytest.mark.slow
@pytest.mark.parametrize("target", ORDER)
def test_a_full_disk_keeps_every_file_before_the_failing_one_whole(finished, monkeypatch, target):
    tuner, comparison = finished
    out = tuner.out
    for name in ORDER:
        (out / name).unlink(missing_ok=True)
    journal = (out / JOURNAL).read_bytes()
    _full_disk_at(monkeypatch, target)
    with pytest.raises(OutputError) as err:
        write_outputs(tuner, comparison, plots=True)
    kept = ["journal.jsonl", *ORDER[:ORDER.index(target)]]
    assert str(err.value) == f"{out}: cannot write {target}: No space left on device; kept {', '.join(kept)}"
    assert err.value.exit_code == 1
    present = sorted(p.name for p in out.iterdir() if p.name != ".memtune.lock")
    assert present == sorted(kept)                          # no half-written file, no temporary left
    assert (out / JOURNAL).read_bytes() == journal
    if "report.json" in kept:
        report = json.loads((out / "report.json").read_text())
        assert report["evaluations"] == 6 and report["files"]["report"] == str(out / "report.json")
        assert report["knob_importance"]                    # computed before the report, not by the plots


def test_a_failed_rewrite_leaves_the_previous_file_whole(finished, monkeypatch):
    tuner, comparison = finished
    write_outputs(tuner, comparison, plots=False)
    before = (tuner.out / "report.json").read_bytes()
    _full_disk_at(monkeypatch, "report.json")
    with pytest.raises(OutputError, match="kept journal.jsonl, best-policy.toml$"):
        write_outputs(tuner, comparison, plots=False)
    assert (tuner.out / "report.json").read_bytes() == before


# --- a real full file system (tmpfs), `memtune optimize` in a subprocess ----------------------------

ARGS = ["--budget", "6", "--batch", "3", "--initial-points", "3", "--knobs", "reservation,limit",
        "--duration", "40s", "--presets", "esxi-default", "--optimizer", "random"]


def _optimize(tiny_path, out, *extra):
    return subprocess.run([sys.executable, "-m", "memtune.cli", "optimize", str(tiny_path), "--out", str(out),
                           *ARGS, *extra], capture_output=True, text=True, timeout=300)


@pytest.fixture
def small_fs(tmp_path):
    """Mounts a tmpfs of a given size (remountable); unmounted at the end. Root only."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "fs"
    where.mkdir()
    mounted = []

    def mount(size: int, remount: bool = False) -> Path:
        opts = f"{'remount,' if remount else ''}size={size}"
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        if not remount:
            mounted.append(where)
        return where

    yield mount
    for m in mounted:
        subprocess.run(["umount", str(m)], check=False)


def _pages(n: int) -> int:
    return -(-n // 4096) * 4096


@pytest.mark.slow
def test_optimize_on_a_full_disk_keeps_journal_policy_and_report(tiny_path, tmp_path, small_fs):
    # the same run on a roomy disk tells how much the valuable files take; the small disk holds
    # them (with a page to spare for the journal's timings) but not the plots
    ref = tmp_path / "ref"
    r = _optimize(tiny_path, ref)
    assert r.returncode == 0, r.stderr
    need = sum(_pages((ref / name).stat().st_size)
               for name in ("journal.jsonl", "best-policy.toml", "report.json"))
    assert (ref / "convergence.png").stat().st_size > 8192
    out = small_fs(need + 4096) / "o"
    r = _optimize(tiny_path, out)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"memtune: error: {out}: cannot write ")
    assert r.stderr.endswith(": No space left on device; kept journal.jsonl, best-policy.toml, report.json\n")
    report = json.loads((out / "report.json").read_text())
    assert report["evaluations"] == 6
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


@pytest.mark.slow
def test_journal_on_a_full_disk_stops_the_run_and_resumes_once_there_is_room(tiny_path, tmp_path, small_fs):
    fs = small_fs(8192)
    out = fs / "o"
    r = _optimize(tiny_path, out, "--no-plots")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(
        f"memtune: error: {out / JOURNAL}: cannot append to the journal: No space left "
        f"on device; it keeps every record before this one"
    )
    small_fs(64 << 20, remount=True)
    r = _optimize(tiny_path, out, "--no-plots", "--resume")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    ref = _optimize(tiny_path, tmp_path / "ref", "--no-plots")
    assert ref.returncode == 0, ref.stderr
    expect = json.loads((tmp_path / "ref" / "report.json").read_text())
    assert [(h["x"], h["value"]) for h in report["history"]] == [
        (h["x"], h["value"]) for h in expect["history"]
    ]
