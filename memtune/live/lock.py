"""The host-wide lock: one process at a time changes KSM, zram, swap or memtune's cgroups.

An exclusive ``flock(2)`` on ``/run/memtune-live.lock`` (the file stays; the lock goes with the
process, also on SIGKILL). Every code path that touches the real host takes it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from memtune.errors import UserError

LOCK_PATH = "/run/memtune-live.lock"


class LockBusy(UserError):
    """Another memtune (or helper) holds the host lock."""


@contextmanager
def host_lock(timeout: float = 0.0, path: str = LOCK_PATH) -> Iterator[int]:
    """Hold the exclusive host lock; wait up to ``timeout`` seconds for it (0: fail at once)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"another process holds {path} (a live run or KSM experiment)",
                                   source=path) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        os.close(fd)          # closing the descriptor releases the flock
