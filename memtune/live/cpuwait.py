"""The time a worker thread waited for a CPU, to keep it out of memory latency.

``/proc/thread-self/schedstat`` holds the thread's time on a CPU, its time waiting on a run queue
(``run_delay``) and its timeslices, in nanoseconds (Documentation/scheduler/sched-stats.rst; the
delay is added when the thread is switched in). A touch that blocks on I/O (a major fault from the
swap file, a read of the guest's swap file) sleeps, and once the I/O is done waits on the run queue
until a CPU is free: on this shared 2-core machine at a load of 7-18 that wait was about 1 ms, five
times the read itself, while zram's swap-in (done by the faulting thread without sleeping) never
waits. That wait is the CPU's, as a preempted touch's is (the worker drops those), so the worker
subtracts it from each timed touch and guest swap-in and counts it apart (``cpu_wait``).
"""

from __future__ import annotations

import os


class RunDelay:
    """Run-queue delay of the calling thread, in ns (0 where schedstat is missing)."""

    def __init__(self, path: str = "/proc/thread-self/schedstat") -> None:
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:
            self._fd = None

    @property
    def available(self) -> bool:
        return self._fd is not None

    def ns(self) -> int:
        if self._fd is None:
            return 0
        return int(os.pread(self._fd, 96, 0).split()[1])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
