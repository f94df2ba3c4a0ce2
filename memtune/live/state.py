"""What a live run changed on the host, kept in a file, undone in reverse order.

Every change is recorded *before* it is made (an undo log): a sysfs value with its old value, a
cgroup created, a swap device switched on, a zram device configured, a file created, a worker
started (pid and start time, so that a reused pid is never signalled). The log is rewritten
atomically on each change to ``/run/memtune-live/state.json``; ``restore()`` undoes it on exit, on
SIGINT/SIGTERM/SIGHUP, and ``memtune live cleanup`` undoes it after a SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from memtune.errors import UserError

STATE_DIR = Path("/run/memtune-live")
STATE_FILE = STATE_DIR / "state.json"


class HostError(UserError):
    """The host cannot or must not be used (not root, resources in use, a run left behind)."""

    exit_code = 1


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def sysfs_read(path: str) -> str:
    """A sysfs value; for a list like ``always [madvise] never`` the selected entry."""
    text = Path(path).read_text().strip()
    if "[" in text and "]" in text:
        return text[text.index("[") + 1:text.index("]")]
    return text


def sysfs_write(path: str, value: Any) -> None:
    with open(path, "w") as f:
        f.write(f"{value}\n")


class HostState:
    """The undo log of one live run (see module docstring)."""

    def __init__(self, path: Path = STATE_FILE) -> None:
        self.path = Path(path)
        self.entries: list[dict[str, Any]] = []
        self.owner = os.getpid()

    # --- persistence ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path = STATE_FILE) -> HostState:
        st = cls(path)
        if st.path.exists():
            try:
                data = json.loads(st.path.read_text())
                st.entries = list(data["entries"])
                st.owner = int(data["owner"])
            except (ValueError, KeyError, TypeError) as exc:
                raise HostError(f"unreadable state file ({exc}); inspect it and remove it by hand",
                                source=str(st.path)) from None
        return st

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"owner": self.owner, "entries": self.entries}, indent=1))
        os.replace(tmp, self.path)

    def record(self, kind: str, **data: Any) -> None:
        self.entries.append({"kind": kind, **data})
        self.save()

    # --- recorded changes ----------------------------------------------------------------------
    def write_sysfs(self, path: str, value: Any) -> None:
        """Write a sysfs value, saving the old one the first time this run writes ``path``."""
        if not any(e["kind"] == "sysfs" and e["path"] == path for e in self.entries):
            self.record("sysfs", path=path, old=sysfs_read(path))
        sysfs_write(path, value)

    def add_worker(self, pid: int) -> None:
        self.record("worker", pid=pid, start=proc_start_time(pid))

    # --- undo ----------------------------------------------------------------------------------
    def restore(self) -> list[str]:
        """Undo every entry, newest first; returns the errors (entries that failed stay logged)."""
        errors: list[str] = []
        left: list[dict[str, Any]] = []
        for e in reversed(self.entries):
            try:
                _UNDO[e["kind"]](e)
            except Exception as exc:      # keep going: undo as much as possible
                errors.append(f"{e['kind']} {e.get('path', e.get('pid'))}: {exc}")
                left.append(e)
        self.entries = list(reversed(left))
        if self.entries:
            self.save()
        elif self.path.exists():
            self.path.unlink()
        return errors


def _undo_sysfs(e: dict[str, Any]) -> None:
    sysfs_write(e["path"], e["old"])


def _undo_worker(e: dict[str, Any]) -> None:
    pid = int(e["pid"])
    if e.get("start") is None or proc_start_time(pid) != e["start"]:
        return                                   # gone, or the pid now belongs to someone else
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if proc_start_time(pid) != e["start"]:
            return
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)


def _undo_cgroup(e: dict[str, Any]) -> None:
    path = Path(e["path"])
    for _ in range(100):
        if not path.exists():
            return
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)                     # the last task is still exiting
    path.rmdir()


def _undo_swapon(e: dict[str, Any]) -> None:
    active = [line.split()[0] for line in Path("/proc/swaps").read_text().splitlines()[1:]]
    if e["path"] in active:
        subprocess.run(["swapoff", e["path"]], check=True, capture_output=True)


def _undo_zram(e: dict[str, Any]) -> None:
    sysfs_write(f"/sys/block/{e['device']}/reset", 1)


def _undo_file(e: dict[str, Any]) -> None:
    p = Path(e["path"])
    if p.is_dir():
        for child in p.iterdir():
            child.unlink()
        p.rmdir()
    elif p.exists():
        p.unlink()


def _undo_mount(e: dict[str, Any]) -> None:
    """Unmount what the run mounted (if it is still mounted)."""
    mounted = [f.split()[1] for f in Path("/proc/mounts").read_text().splitlines()]
    if e["path"] in mounted:
        subprocess.run(["umount", e["path"]], check=True, capture_output=True)


_UNDO = {"sysfs": _undo_sysfs, "worker": _undo_worker, "cgroup": _undo_cgroup, "swapon": _undo_swapon,
         "zram": _undo_zram, "file": _undo_file, "mount": _undo_mount}


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def opened_state(path: Path = STATE_FILE) -> Iterator[HostState]:
    """A fresh undo log, restored on exit and on SIGINT/SIGTERM/SIGHUP (call under the host lock).

    Refuses when a previous run left changes behind (``memtune live cleanup`` undoes them)."""
    old = HostState.load(path)
    if old.entries:
        raise HostError("a previous live run left changes behind; run `memtune live cleanup` first",
                        source=str(path))
    st = HostState(path)
    st.save()
    handlers = {s: signal.signal(s, _raise_exit) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield st
    finally:
        # no second signal may cut the restore short
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        try:
            errors = st.restore()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for s, h in handlers.items():
                signal.signal(s, h)
        if errors:
            raise HostError("could not undo: " + "; ".join(errors) + " (see `memtune live cleanup`)",
                            source=str(path))
