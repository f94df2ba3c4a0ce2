"""The live driver's undo log, lock, content and scaling, without touching the host."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from memtune.core.plugins import build_plugin_manager
from memtune.core.registry import settings_registry
from memtune.core.scenario import load_scenario
from memtune.live.content import PAGE, canonical_classes, fill
from memtune.live.lock import LockBusy, host_lock
from memtune.live.scale import scale_scenario
from memtune.live.state import HostError, HostState, opened_state, proc_start_time


def test_sysfs_values_are_saved_once_and_restored(tmp_path):
    knob = tmp_path / "pages_to_scan"
    knob.write_text("100\n")
    listing = tmp_path / "comp_algorithm"
    listing.write_text("[lzo-rle] lzo lz4\n")
    with opened_state(tmp_path / "state.json") as st:
        st.write_sysfs(str(knob), 5000)
        st.write_sysfs(str(knob), 7000)
        st.write_sysfs(str(listing), "lz4")
        saved = json.loads((tmp_path / "state.json").read_text())["entries"]
        assert [e["old"] for e in saved] == ["100", "lzo-rle"]      # the first value, not the second
    assert knob.read_text().strip() == "100"
    assert listing.read_text().strip() == "lzo-rle"
    assert not (tmp_path / "state.json").exists()


def test_restore_runs_on_an_exception_and_keeps_what_failed(tmp_path):
    knob = tmp_path / "run"
    knob.write_text("0\n")
    with pytest.raises(RuntimeError), opened_state(tmp_path / "state.json") as st:
        st.write_sysfs(str(knob), 1)
        raise RuntimeError("boom")
    assert knob.read_text().strip() == "0"
    st = HostState(tmp_path / "s2.json")
    st.record("sysfs", path=str(tmp_path / "gone" / "x"), old="1")
    errors = st.restore()
    assert errors and HostState.load(tmp_path / "s2.json").entries   # kept for `memtune live cleanup`


def test_a_left_over_log_blocks_the_next_run(tmp_path):
    st = HostState(tmp_path / "state.json")
    st.record("cgroup", path=str(tmp_path / "nope"))
    with pytest.raises(HostError, match="memtune live cleanup"), opened_state(tmp_path / "state.json"):
        pass


def test_a_reused_pid_is_never_signalled(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        st = HostState(tmp_path / "state.json")
        st.record("worker", pid=child.pid, start=1)         # a different start time: not ours
        assert st.restore() == []
        assert child.poll() is None
        st.add_worker(child.pid)
        st.restore()
        assert proc_start_time(child.pid) is None            # killed (and reaped)
    finally:
        if child.poll() is None:
            child.kill()


def test_lock_is_exclusive(tmp_path):
    path = str(tmp_path / "lock")
    with host_lock(path=path):
        code = ("import sys; from memtune.live.lock import host_lock\n"
                f"with host_lock(path={path!r}): pass")
        busy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert busy.returncode != 0 and "LockBusy" in busy.stderr
    with host_lock(path=path) as fd:
        assert fd >= 0
    assert issubclass(LockBusy, Exception)


def test_equal_keys_give_equal_bytes_and_classes_compress_as_stated():
    import zlib

    keys = np.array([0, 5, 5, 7, (3 << 47) | 5, (3 << 47)], dtype=np.int64)
    zc = canonical_classes(keys, np.array([0, 1, 3, 3, 0, 2], dtype=np.uint8))
    assert zc[1] == zc[2]
    out = np.empty((keys.size, PAGE), dtype=np.uint8)
    fill(out, keys, zc)
    assert not out[0].any()                                   # content 0, no salt: a zero page
    assert (out[1] == out[2]).all() and not (out[1] == out[4]).all()   # salt scope separates
    assert out[5, 8:].sum() == 0 and out[5, :8].any()         # a salted zero page is its tag
    bound = (1024, 2048, 3072)
    for i in range(1, 4):
        size = len(zlib.compress(out[i].tobytes(), 1))
        assert size > 4000 if zc[i] == 3 else size < bound[zc[i]]


def test_scaled_scenario_keeps_the_mix_and_compresses_the_schedule():
    sc = load_scenario("small")
    s = scale_scenario(sc, 128, 60, max_vms=4)
    assert s.host.page_scale == 1 and len(s.vms) == 4
    assert {v.name.rsplit("-", 1)[0] for v in s.vms} == {"web", "db", "vdi", "batch"}
    assert s.vms[0].memory == sc.vms[0].memory // 128
    assert s.host.memory == sc.host.memory // 4 // 128
    batch = next(v for v in s.vms if v.name.startswith("batch"))
    assert batch.workload.phases[0].at == pytest.approx(600 * 60 / 1800)
    assert s.settings["Mem.SamplePeriod"] == pytest.approx(2.0)
    assert s.settings["Mem.AllocGuestLargePage"] is False
    assert s.vms[0].overhead == pytest.approx(sc.vms[0].overhead / 128, rel=1e-3)


def test_scaling_keeps_the_machines_own_times():
    """ksmd's per-page costs and the kernel tick are real time on both sides: a 30 s run of a
    30-minute schedule compressed them 60-fold, and the model's ksmd scanned 3x faster than the kernel."""
    sc = load_scenario("small")
    sc = sc.replace(settings={**sc.settings, "memtune.sharing": "ksm"})
    s = scale_scenario(sc, 128, 30)
    full = settings_registry(build_plugin_manager()).resolve(sc.settings, source="small")
    for name in ("memtune.ksm_jiffy", "memtune.ksm_page_cost", "memtune.ksm_tree_cost"):
        assert s.settings[name] == pytest.approx(full[name])
    assert s.settings["ksmtuned.KSM_MONITOR_INTERVAL"] == pytest.approx(60 * 30 / 1800)   # a period


def test_cleanup_command_without_root_or_state_says_so(tmp_path):
    from click.testing import CliRunner

    from memtune.cli import main_group

    r = CliRunner().invoke(main_group, ["live", "status"])
    assert r.exit_code == 0 and "live runs:" in r.output
    if os.geteuid() != 0:
        r = CliRunner().invoke(main_group, ["live", "cleanup"])
        assert r.exit_code == 1 and "root" in r.output


@pytest.mark.parametrize("args, field", [
    (["validate", "small", "--seeds", "1,x"], "--seeds"),
    (["validate", "small", "--ksm", "bogus=1"], "--ksm"),
    (["validate", "small", "--memory-scale", "0.5"], "--memory-scale"),
    (["validate", "small", "--calibration", "/nonexistent.toml"], "/nonexistent.toml"),
    (["optimize", "small", "--confirm", "qemu"], "--confirm"),
])
def test_bad_live_options_are_one_line_and_exit_2(args, field, tmp_path):
    from click.testing import CliRunner

    from memtune.cli import main_group

    argv = [*args, "--out", str(tmp_path / "o")] if args[0] == "validate" else args
    r = CliRunner().invoke(main_group, argv)
    assert r.exit_code == 2, r.output
    assert field in r.output and len(r.output.strip().splitlines()) == 1


def test_compare_figures_ratios_targets_and_measured_latency():
    from memtune.live.compare import compare_figures, measured_latencies
    from memtune.live.figures import FIGURES

    def figs(scale: float) -> dict:
        out = {k: 100.0 * scale for k in FIGURES}
        out["time_in_state"] = {"high": 10.0 * scale, "clear": 0.0}
        return out

    rows = compare_figures([figs(1.04), figs(1.06)], [figs(1.0), figs(1.0)])
    assert rows["shared_saved"]["ratio"] == pytest.approx(1.05)
    assert rows["shared_saved"]["met"] is False and rows["swapped"]["met"] is True  # 5 % vs 25 %
    assert rows["stall"]["model"]["sd"] > 0 and "met" not in rows["stall"]
    assert rows["time_high"]["ratio"] == pytest.approx(1.05) and rows["time_clear"]["ratio"] is None
    runs = [
        {
            "vms": [
                {"extra_by_cause": {"guest_swap_in": 0.5}, "guest_swap_ins": 1000},
                {"extra_by_cause": {"guest_swap_in": 0.0}, "guest_swap_ins": 0},
            ]
        }
    ]
    assert measured_latencies(runs) == {"latency.guest_swap_in": pytest.approx(5e-4)}
    assert measured_latencies([{"vms": []}]) == {}


def test_ksm_knobs_follow_the_sharing_mode():
    from memtune.live.linux import ksm_knobs

    s = scale_scenario(load_scenario("small"), 128, 60)
    esx = ksm_knobs(s, {})
    # 16 VMs of 48 MiB, each scanned in Mem.ShareScanTime (60 min): 16 * 12288 / 3600 pages/s
    assert esx == {
        "pages_to_scan": round(16 * 12288 / 3600 * 0.020) or 1,
        "sleep_millisecs": 20,
        "use_zero_pages": 0,
        "max_page_sharing": 256,
        "run": 1,
    }
    k = s.replace(
        settings={**s.settings, "memtune.sharing": "ksm", "ksm.pages_to_scan": 777, "ksm.sleep_millisecs": 15}
    )
    knobs = ksm_knobs(k, {"max_page_sharing": 64})
    assert (
        knobs["pages_to_scan"] == 777 and knobs["sleep_millisecs"] == 15 and knobs["max_page_sharing"] == 64
    )
    assert "merge_across_nodes" not in knobs and knobs["run"] == 1


def test_ksmd_page_cost_fitted_to_a_runs_counters_is_the_cost_that_made_them():
    """``memtune.live.ksm_rate``: counters recorded each tick (here the model's own, made with a known
    per-page cost) give that cost back from the first full scan; the tree cost is left to the
    setting; runs without the KSM mode, or with too few ticks, give nothing."""
    from benchmarks import ksm_convergence as kc
    from memtune.live.compare import measured_latencies
    from memtune.live.ksm_rate import fitted_costs
    from memtune.plugins import ksm

    knobs = {"pages_to_scan": 100, "sleep_millisecs": 20}
    host, engine = kc.build(knobs=knobs, page_cost=(8e-6, 80e-6))
    tl: dict = {"t": [], "ksm": []}
    while host.now < 8.0 - 1e-9:
        engine.step(kc.TICK)
        if round(host.now / kc.TICK) % 10 == 0:
            tl["t"].append(host.now)
            tl["ksm"].append(ksm.counters(host))
    settings = {k: v for k, v in host.settings.items() if "ksm" in k or k == "memtune.sharing"}
    runs = [{"timeline": tl, "host": {"ksm_settings": settings}, "vms": []}]
    got = fitted_costs(runs)
    assert got == {"memtune.ksm_page_cost": pytest.approx(8e-6, rel=0.1)}
    assert measured_latencies(runs) == got
    assert fitted_costs([{**runs[0], "host": {"ksm_settings": {**settings, "memtune.sharing": "tps"}}}]) == {}
    one_tick = {"t": [1.0], "ksm": tl["ksm"][:1]}
    assert fitted_costs([{"timeline": one_tick, "host": {"ksm_settings": settings}}]) == {}
