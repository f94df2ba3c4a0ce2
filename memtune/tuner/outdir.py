"""A tuning run's output directory: one run at a time, files written whole or not at all.

- :class:`DirLock`: an exclusive ``flock`` on ``<out>/.memtune.lock`` for as long as a run uses the
  directory. The lock file holds the holder's PID, so a second run can name it; the kernel drops
  the lock when the holder exits, however it exits, so a killed run never leaves a stale lock.
- :class:`Outputs`: every result file is written to a temporary file in the same directory, synced,
  then renamed over its name (``os.replace`` is atomic on POSIX), so a reader sees the old file or
  the new one, never half of one. Callers write in order of value (journal, best policy,
  ``report.json``, plots); when a write fails (disk full, permissions) :class:`OutputError` says
  which files were kept and nothing half-written is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from memtune.errors import OutputError, UserError

LOCK_FILE = ".memtune.lock"


class DirLock:
    """An exclusive lock on directory ``path`` (created if missing) held by this process."""

    def __init__(self, path: Path | str, *, field: str = "--out") -> None:
        self.path = Path(path)
        self._fd: int | None = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output directory {str(self.path)!r}: {exc.strerror or exc}",
                            field=field) from None
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot use output directory {str(self.path)!r}: {exc.strerror or exc}",
                            field=field) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "a process whose pid it did not record"
            raise UserError(f"{str(self.path)!r} is in use by another memtune run ({who}); wait for it to "
                            f"end or use another directory", field=field) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:             # the lock holds without the note (a full disk)
            pass
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would let a waiting run lock a stale inode)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):  # no stale pid for the next run's refusal to name
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:         # a run dropped without closing (a test's simulated kill)
        self.release()

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_pid(fd: int, wait: float = 1.0) -> int | None:
    """The holder's pid; a run that has just taken the lock writes it a moment later, so poll."""
    deadline = time.monotonic() + wait
    while (pid := _read_pid(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class Outputs:
    """Writes result files into ``directory`` atomically and remembers which it kept.

    ``kept`` starts with the files that are already safe (the journal); every successful write
    adds its file. A failed write removes its temporary file and raises :class:`OutputError`
    naming the file, the reason and what was kept."""

    def __init__(self, directory: Path | str, kept: list[Path] | None = None) -> None:
        self.directory = Path(directory)
        self.kept: list[Path] = list(kept or [])

    def write_text(self, name: str, text: str) -> Path:
        data = text.encode("utf-8")
        return self.write_with(name, lambda f: f.write(data))

    def write_with(self, name: str, fill: Callable[..., object]) -> Path:
        """Write ``name`` by calling ``fill(binary file)`` on a temporary file, then rename it."""
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            _remove(tmp)
            raise OutputError(f"cannot write {name}: {exc.strerror or exc}; {self.describe_kept()}",
                              source=str(self.directory)) from exc
        except BaseException:
            _remove(tmp)
            raise
        self.kept.append(path)
        return path

    def describe_kept(self) -> str:
        if not self.kept:
            return "nothing was kept"
        return "kept " + ", ".join(p.name for p in self.kept)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
