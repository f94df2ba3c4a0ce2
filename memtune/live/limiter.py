"""The parent cgroup's limit, written from a thread of its own.

Writing a v1 ``memory.limit_in_bytes`` below the usage makes the writer reclaim down to it before
the write returns (mm/memcontrol.c, ``mem_cgroup_resize_max``; ``EBUSY`` if it cannot). Under load
that took 18-25 s for a few MiB here, and the control loop, blocked in the write, missed every tick
meanwhile (a run then spent 27 s in one "low" tick). The loop now only posts the limit it wants; this
thread writes the latest one, reclaiming in the background as kswapd does on a real host.
"""

from __future__ import annotations

import threading
import time

from memtune.live.cgroup import Group
from memtune.live.state import HostState, sysfs_write

RETRY = 0.05     # seconds before trying again after EBUSY


class LimitWriter:
    def __init__(self, st: HostState, group: Group, first: int) -> None:
        self.path = str(group.v1 / "memory.limit_in_bytes")
        group.set_limit(st, first)             # recorded (old value saved) before the thread runs
        self.want: int | None = first
        self.current: int | None = first
        self.busy = 0                          # writes the kernel refused (EBUSY)
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="memtune-parent-limit", daemon=True)
        self._thread.start()

    def post(self, limit: int) -> None:
        with self._cv:
            self.want = limit
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and self.want == self.current:
                    self._cv.wait()
                if self._stop:
                    return
                limit = self.want
            try:
                sysfs_write(self.path, limit)
                self.current = limit
            except OSError:                    # EBUSY: not reclaimable yet; retry with the latest
                self.busy += 1
                time.sleep(RETRY)

    def close(self, timeout: float = 30.0) -> None:
        """Stop; a write in progress ends when its reclaim does (or the workers are gone)."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout)
