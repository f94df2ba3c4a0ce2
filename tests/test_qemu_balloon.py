"""The balloon against a real virtio-balloon (QEMU/TCG test bed, memtune.live.qemu).

Behind a flag: runs only with MEMTUNE_QEMU=1, as root, with qemu-system-x86_64, busybox and a
guest kernel (`python -m memtune.live.qemu --fetch-kernel`); skipped with the reason otherwise.
Two boots of about 20-60 s each under TCG.
"""

from __future__ import annotations

import os

import pytest

from memtune.live import qemu
from memtune.live.lock import host_lock
from memtune.live.safety import host_snapshot
from memtune.live.state import STATE_FILE, HostState, opened_state

pytestmark = [pytest.mark.qemu, pytest.mark.live]


@pytest.fixture
def bed():
    if os.environ.get("MEMTUNE_QEMU") != "1":
        pytest.skip("QEMU test bed: set MEMTUNE_QEMU=1 to run it (two TCG boots, about 2 minutes)")
    reason = qemu.unavailable() or (None if os.geteuid() == 0 else "needs root")
    if reason:
        pytest.skip(f"QEMU test bed: {reason}")


def _check(fill: bool) -> tuple[dict, dict, dict]:
    with host_lock(900):
        if HostState.load(STATE_FILE).entries:
            pytest.skip("QEMU test bed: a live run's changes are left behind (memtune live cleanup)")
        before = host_snapshot()
        with opened_state() as st:
            out = qemu.balloon_check(st, fill=fill)
        return before, out, host_snapshot()


def test_balloon_gives_back_what_the_guest_had_touched(bed):
    before, out, after = _check(fill=True)
    # the target is honoured (query-balloon's actual reached it) and the guest lost that much free memory
    assert 0.9 < out["guest_free_drop_ratio"] < 1.1
    # its free memory was written before (backed on the host): the host gets it all back
    assert out["host_rss_drop_ratio"] > 0.9
    assert out["guest_free"][2] > out["guest_free"][1] + 0.9 * 128 * 2**20      # deflated again
    assert after == before


def test_balloon_over_never_touched_memory_gives_the_host_little(bed):
    before, out, after = _check(fill=False)
    assert 0.9 < out["guest_free_drop_ratio"] < 1.1
    # pages the guest never touched held no host memory: inflating over them frees little
    assert out["host_rss_drop_ratio"] < 0.5
    assert after == before
