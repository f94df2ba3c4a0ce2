"""The Linux driver on this host (root): KSM merges what the content mix predicts; a limit below
the working set brings swap-ins, pressure and slower touches; a balloon target is honoured; and
afterwards nothing differs, also after a SIGKILL and ``memtune live cleanup``.

Small on purpose (16 MiB VMs, ~15 s runs, KSM scanning 5000 pages per 10 ms): ksmd is starved by
busy CPUs on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from memtune.core.pages import CONTENT_BITS, FREE
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.live import ksm, swap
from memtune.live.content import predicted_sharing
from memtune.live.linux import LinuxDriver, LiveOptions
from memtune.live.lock import host_lock
from memtune.live.safety import host_snapshot, unavailable
from memtune.live.scale import scale_scenario
from memtune.live.state import STATE_FILE, HostState, proc_start_time

pytestmark = [pytest.mark.live, pytest.mark.integration]

FAST_KSM = {"pages_to_scan": 5000, "sleep_millisecs": 10}
MiB = 2**20


def _skip_reason() -> str | None:
    reason = unavailable()
    if reason:
        return reason
    return None


def _snapshot() -> dict:
    """The host between live runs: taken under the host lock, so never in the middle of one (other
    test sessions on this machine run these tests too)."""
    with host_lock(600):
        return host_snapshot()


@pytest.fixture
def host():
    reason = _skip_reason()
    if reason:
        pytest.skip(f"live host tests: {reason}")
    if HostState.load(STATE_FILE).entries:
        pytest.skip("live host tests: a live run not started by these tests left changes behind "
                    "(its owner should run `memtune live cleanup`)")
    before = _snapshot()
    yield before
    assert _snapshot() == before                       # nothing a run changed is left behind


def _scenario(vms: list[dict], memory: str, duration: float, settings: dict | None = None, **workload):
    wl = {"allocated": 0.8, "wss": 0.3, "hot_share": 0.9, "touch_rate": 2000, "write_fraction": 0.0,
          "content": {"zero": 0.1, "template": 0.5, "duplicate": 0.1, "unique": 0.3},
          "compressibility": {"le_1k": 0.3, "le_2k": 0.3, "le_3k": 0.2, "worse": 0.2}, **workload}
    data = {
        "name": "live-test",
        "duration": "30m",
        "tick": "5s",
        "seed": 7,
        "host": {"memory": memory, "page_scale": 1},
        "settings": {"memtune.warm_start": True, **(settings or {})},
        "workloads": {"w": wl},
        "vm": [{"memory": "1 GiB", "workload": "w", "image": "linux", **v} for v in vms],
    }
    return scale_scenario(scenario_from_dict(data, "<live test>"), 64, duration)


def _run(sc, **options):
    deadline = time.monotonic() + 120
    while True:
        try:
            return LinuxDriver(LiveOptions(lock_timeout=300, **options)).run(sc)
        except Exception as exc:
            if "something else uses it" in str(exc):
                pytest.skip(f"live host tests: {exc}")
            # another test session's SIGKILL test is between its kill and its cleanup
            if "left changes behind" not in str(exc):
                raise
            if time.monotonic() > deadline:
                pytest.skip(f"live host tests: {exc}")
            time.sleep(1)


def test_ksm_merges_what_the_content_mix_predicts(host):
    sc = _scenario([{"name": "vm", "count": 3}], "8 GiB", 12, {"Mem.ShareForceSalting": 0})
    model = build_host(sc)
    pg = model.pages
    resident = pg.state != FREE
    keys = (np.zeros(model.nvm, dtype=np.int64)[pg.vm] << CONTENT_BITS) | pg.content
    predicted = predicted_sharing(keys[resident])
    assert predicted > 3000  # template and zero pages across 3 VMs
    r = _run(sc, ksm=FAST_KSM)
    real = r["host"]["ksm"]["pages_sharing"]
    assert real == pytest.approx(predicted, rel=0.05)
    assert r["figures"]["shared_saved"] == real * 4096


def test_limit_below_working_set_swaps_stalls_and_balloon_target_is_honoured(host):
    vms = [{"name": "free"}, {"name": "limited", "limit": "576 MiB"}, {"name": "ballooned"}]
    sc = _scenario(vms, "8 GiB", 15, wss=0.4, touch_rate=20000, write_fraction=0.2)
    target = 6 * MiB  # of the 16 MiB VM, whose guest uses 80 % (12.8 MiB)
    r = _run(sc, balloon={"ballooned": target})
    rows = {row["name"]: row for row in r["vms"]}
    free, limited, balloon = rows["free"], rows["limited"], rows["ballooned"]
    assert limited["major_faults"] > 1000 > free["major_faults"]
    assert limited["swap"] > 0 and free["swap"] == 0
    assert limited["psi_some"] > max(free["psi_some"], 0.001)
    assert limited["mean_latency"] > 5 * free["mean_latency"]
    assert limited["p99_latency"] > free["p99_latency"]
    # the balloon holds its target: the guest's free pages hold no memory (never touched), so the
    # guest pages out 6 MiB of its coldest pages to its own disk and gives their frames back
    assert balloon["ballooned"] == target
    assert balloon["guest_swapped"] >= target - 4096
    assert balloon["guest_swap_ins"] > 0  # touched back in, and another page out
    # its machine memory is at most what its guest uses minus the balloon (plus the pages touched
    # back in during the last 50 ms quantum, a few dozen)
    assert balloon["held"] <= 0.8 * 16 * MiB - target + 64 * 4096
    assert free["held"] - balloon["held"] > 0.8 * target


def test_a_vm_whose_hot_set_exceeds_its_limit_waits_and_is_not_killed(host):
    # reservation 80 % (locked) and limit 87.5 % of a VM whose guest touches all of it, no balloon:
    # the kernel's reclaim at the limit makes no progress and its OOM killer took this VM in 2 of 2
    # runs without memtune.live.oomguard; ESX swaps it and it waits
    vms = [{"name": "tight", "reservation": "820 MiB", "limit": "896 MiB", "maxmemctl": 0}, {"name": "free"}]
    sc = _scenario(vms, "8 GiB", 15, allocated=1.0, wss=0.97, hot_share=0.99, touch_rate=40000,
                   write_fraction=0.2)
    r = _run(sc)
    rows = {row["name"]: row for row in r["vms"]}
    assert r["figures"]["oom_killed"] == []
    assert r["figures"]["limit_waits"]["tight"] > 0       # it did wait at its limit
    assert rows["tight"]["swap"] > 0 and rows["tight"]["major_faults"] > 100
    assert rows["tight"]["mean_latency"] > rows["free"]["mean_latency"]


def test_sigkill_then_cleanup_restores_everything(host, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sc_code = "\n".join(
        [
            f"import sys; sys.path.insert(0, {root!r})",
            "from tests.test_live_host import _scenario",
            "from memtune.live.linux import LinuxDriver, LiveOptions",
            "sc = _scenario([{'name': 'vm', 'count': 2}], '8 GiB', 60)",
            f"LinuxDriver(LiveOptions(lock_timeout=300, ksm={FAST_KSM!r})).run(sc)",
        ]
    )
    p = subprocess.Popen([sys.executable, "-c", sc_code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and p.poll() is None:
        try:
            entries = json.loads(STATE_FILE.read_text())["entries"]
        except (OSError, ValueError, KeyError):
            entries = []
        workers = [e["pid"] for e in entries if e["kind"] == "worker"]
        if len(workers) == 2 and swap.swaps():
            break
        time.sleep(0.2)
    assert p.poll() is None, p.stderr.read().decode()[-2000:]
    time.sleep(2)  # let the workers fill and KSM start
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert host_snapshot() != host  # the run left its changes behind (lock released)
    deadline = time.monotonic() + 10  # ... but no worker outlives its driver
    while any(proc_start_time(pid) is not None for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(proc_start_time(pid) is None for pid in workers)
    from click.testing import CliRunner

    from memtune.cli import main_group

    res = CliRunner().invoke(main_group, ["live", "cleanup"])
    assert res.exit_code == 0, res.output
    assert "undid" in res.output
    assert not STATE_FILE.exists()
    assert ksm.counters()["pages_shared"] == 0
