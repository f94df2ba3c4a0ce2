"""The run-queue wait a worker keeps out of its touch latencies (memtune.live.cpuwait)."""

from __future__ import annotations

import sys
import threading

import pytest

from memtune.live.cpuwait import RunDelay


def test_reads_the_run_delay_field(tmp_path):
    f = tmp_path / "schedstat"
    f.write_text("123456 7890 42\n")
    rd = RunDelay(str(f))
    assert rd.available and rd.ns() == 7890
    f.write_text("123456 9000 43\n")
    assert rd.ns() == 9000            # read again each time, not cached
    rd.close()
    assert rd.ns() == 0


def test_missing_schedstat_counts_no_wait(tmp_path):
    rd = RunDelay(str(tmp_path / "absent"))
    assert not rd.available and rd.ns() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="schedstat is Linux's")
def test_a_thread_reads_its_own_delay():
    seen: list[int] = []

    def other() -> None:
        rd = RunDelay()
        seen.extend([rd.ns(), rd.ns()])

    t = threading.Thread(target=other)
    t.start()
    t.join()
    rd = RunDelay()
    if not rd.available:
        pytest.skip("/proc/thread-self/schedstat is missing (kernel without CONFIG_SCHED_INFO)")
    a = rd.ns()
    assert a >= 0 and rd.ns() >= a and seen[1] >= seen[0] >= 0
