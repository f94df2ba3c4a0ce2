"""zswap on this host (root): pages a memory cgroup's limit pushes out are stored compressed, its
statistics say so, and the parameters, the swap file, the cgroup and debugfs are as found after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memtune.live import cgroup, swap, zswap
from memtune.live.lock import host_lock
from memtune.live.safety import host_snapshot, unavailable
from memtune.live.state import STATE_FILE, HostState, opened_state

pytestmark = [pytest.mark.live, pytest.mark.integration]
MiB = 2**20
# the child joins the cgroup, then writes 48 MiB of pages that are 1 KiB random and 3 KiB zero
CHILD = """
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
b = bytearray(48 << 20)
for i in range(0, len(b), 4096):
    b[i:i + 1024] = os.urandom(1024)
print("filled", flush=True)
time.sleep(600)
"""


def _mounts() -> bool:
    return zswap.debugfs_mounted()


def test_zswap_stores_what_the_limit_pushes_out_and_all_is_restored():
    reason = unavailable() or zswap.available()
    if reason:
        pytest.skip(f"zswap host test: {reason}")
    with host_lock(600):
        if HostState.load(STATE_FILE).entries or swap.in_use():
            pytest.skip("zswap host test: swap or a live run's changes are in use")
        before, mounted = host_snapshot(), _mounts()
        with opened_state() as st:
            debug = zswap.mount_debugfs(st)
            zswap.configure(st, enabled=True, compressor="lzo", max_pool_percent=1)
            swap.add_swap_file(st, Path(f"/var/tmp/memtune-zswap-test-{os.getpid()}.swap"), 128 * MiB)
            g = cgroup.create_parent(st, 24 * MiB)
            start = zswap.stats()
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(g.v1 / "cgroup.procs")],
                                     stdout=subprocess.PIPE, text=True)
            st.add_worker(child.pid)
            assert child.stdout.readline().strip() == "filled"
            time.sleep(0.5)
            got = zswap.stats()
            print("zswap after 48 MiB under a 24 MiB limit:", {k: got[k] - start.get(k, 0) for k in got})
        child.wait(30)
        after, mounted_after = host_snapshot(), _mounts()
    assert got["zswpout"] - start["zswpout"] > 16 * MiB // 4096        # at least 24 MiB pushed out
    assert got["stored_bytes"] > 16 * MiB
    assert got["pool_bytes"] < 0.5 * got["stored_bytes"]               # 1 KiB random in 4 KiB
    if debug:
        assert got["stored_pages"] * 4096 == got["stored_bytes"]
    assert after == before and mounted_after == mounted
