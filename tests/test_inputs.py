"""A device or pipe named where memtune reads a file is refused in one line before anything is read.

``/dev/zero`` and ``/dev/full`` read as zeros forever: ``simulate --audit-log /dev/full`` read the
"existing log" until the OOM killer ended the process (a CI run's pytest reached 24 GB in the fuzz
test), and a scenario, policy, journal or esxtop capture named as a device did the same. Each case runs
in a subprocess under an address-space ceiling, so a regression fails here instead of taking the
machine's memory.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from memtune.errors import UserError
from memtune.inputs import read_bytes, read_text

CEILING = 3 << 30


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CEILING, CEILING))


def _memtune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memtune", *args], capture_output=True, text=True,
                          timeout=120, preexec_fn=_limited, cwd=cwd)


def _fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "/dev/zero"],
        ["simulate", "small", "--policy", "/dev/zero"],
        ["simulate", "small", "--duration", "10m", "--audit-log", "/dev/full"],
        ["audit", "verify", "/dev/zero"],
        ["audit", "show", "/dev/zero"],
        ["import", "esxtop", "/dev/zero"],
        ["simulate", "FIFO"],
        ["audit", "verify", "FIFO"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_device_or_pipe_as_an_input_file_is_one_line(tmp_path, args):
    args = [_fifo(tmp_path) if a == "FIFO" else a for a in args]
    res = _memtune(*args, cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode in (1, 2) and len(lines) == 1, res.stderr
    assert "regular file" in lines[0] and "internal error" not in lines[0], lines[0]


def test_a_journal_that_is_a_device_is_refused_on_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "journal.jsonl").symlink_to("/dev/zero")
    res = _memtune("optimize", "small", "--out", str(out), "--resume", cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "journal" in lines[0], res.stderr


def test_an_audit_key_file_that_is_a_device_is_refused(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("")
    res = _memtune("audit", "verify", str(log), "--key-file", "/dev/zero", cwd=tmp_path)
    assert res.returncode in (1, 2) and "regular file" in res.stderr, res.stderr


def test_reads_are_bounded_and_name_the_file(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(UserError, match="larger than"):
        read_bytes(big, "the thing", limit=1024)
    assert read_bytes(big, "the thing", limit=4096) == b"x" * 2048
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match=r"bin: the thing is not UTF-8"):
        read_text(tmp_path / "bin", "the thing")
    with pytest.raises(UserError, match="not a folder"):
        read_text(tmp_path, "the thing")
