"""Transparent page sharing: what is shared and saved under each salting mode, COW breaks, large
pages, scan rate, accounting and metrics. Expected numbers follow from the content mix.

Hosts are large enough to stay in the HIGH state (so no reclamation runs); the other reclamation
plugins are disabled so these tests see the sharing plugin alone. Tests that need exact sharing
figures map every guest page first (as if each guest had touched all of its memory), so the
scanner finds every page resident on its first pass.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_scenario, make_host, map_all, run_for

from memtune import hookimpl
from memtune.core.contents import is_unique
from memtune.core.pages import FREE, RESIDENT
from memtune.core.report import vm_amounts
from memtune.errors import ConfigError
from memtune.plugins import tps

PAGE = 4096
SCAN = 600.0              # Mem.ShareScanTime = 10 minutes
MIX = {"zero": 0.1, "template": 0.5, "duplicate": 0.2, "unique": 0.2}   # of 10000 pages
N10K = "40000 KiB"         # 10000 pages of 4 KiB


def scenario(vms: list[dict], *, salting: int = 0, content: dict | None = None, write: float = 0.0,
             host: str = "4 GiB", large_pages: bool = False, settings: dict | None = None,
             touch_rate: float = 1e5, tick: str = "10s"):
    wl = {"allocated": 1.0, "wss": 1.0, "touch_rate": touch_rate, "write_fraction": write,
          "content": content or {"template": 1.0}}
    # scan every tick (not in 30 s batches), so figures follow the scan rate tick by tick
    s = {"Mem.ShareForceSalting": salting, "Mem.ShareScanTime": 10, "memtune.share_scan_interval": 0,
         **(settings or {})}
    return build_scenario(vms, name="tps-test", memory=host, duration="30m", tick=tick, seed=7, page_scale=1,
                          settings=s, workload=wl, tiny_workload=False, report_interval=None,
                          vm_defaults={"workload": "w", "image": "linux", "large_pages": large_pages},
                          source="<tps-test>")


def check_table(host) -> None:
    """Refcounts equal the pages mapping each frame; the host pool is the live frames."""
    d = host.plugin_data["tps"]
    pg = host.pages
    sp = np.flatnonzero(pg.state == d.code)
    keys = tps.content_keys(d, host, sp)
    slot = d.index.find(keys)
    assert (slot >= 0).all()
    us, c = np.unique(slot, return_counts=True)
    assert np.array_equal(d.index.ref[us], c)
    live = d.index.ref[: d.index.size] > 0
    assert int(live.sum()) == us.size == d.frames
    assert host.host_pools["tps"] == d.frames
    assert d.total_ref == sp.size == int(pg.counts[:, d.code].sum())
    # page conservation: counts equal a recount
    recount = np.zeros_like(pg.counts)
    np.add.at(recount, (pg.vm, pg.state), 1)
    assert np.array_equal(recount, pg.counts)


def pages_of(amounts, key):
    return amounts[key] / PAGE


# --- salting -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_identical_vms_share_n_minus_1_over_n_of_template_pages():
    n_vm, n = 4, 10000
    host, eng = make_host(scenario([{"name": "web", "count": n_vm, "memory": N10K}], salting=0))
    map_all(host)
    run_for(eng, SCAN + 20)
    a = vm_amounts(host)
    assert np.array_equal(pages_of(a, "shared"), [n] * n_vm)
    # each page is one of 4 mapping a frame: saves 3/4 of a page, consumes 1/4
    np.testing.assert_allclose(pages_of(a, "shared_saved"), n * (n_vm - 1) / n_vm)
    np.testing.assert_allclose(pages_of(a, "shared_consumed"), n / n_vm)
    np.testing.assert_allclose(pages_of(a, "consumed"), n / n_vm)       # no private page left
    assert host.host_pools["tps"] == n
    saved_fraction = a["shared_saved"].sum() / a["memsz"].sum()
    assert saved_fraction == pytest.approx((n_vm - 1) / n_vm)
    # host memory really is freed: n frames instead of n_vm * n private pages
    assert host.used_bytes() == pytest.approx(n * PAGE + host.overhead_bytes)
    check_table(host)


@pytest.mark.slow
def test_salting_2_shares_only_zero_pages_and_duplicates_inside_each_vm():
    # per VM: 1000 zero, 5000 template, 2000 duplicates in 500 groups of 4, 2000 unique
    host, eng = make_host(scenario([{"name": "web", "count": 3, "memory": N10K}], salting=2, content=MIX))
    map_all(host)
    run_for(eng, SCAN + 20)
    a = vm_amounts(host)
    # shared: zero pages + duplicates; frames: 1 zero frame + 500 groups, per VM
    assert np.array_equal(pages_of(a, "shared"), [3000] * 3)
    np.testing.assert_allclose(pages_of(a, "shared_saved"), 999 + 1500)
    np.testing.assert_allclose(pages_of(a, "zero"), 1000)
    assert host.host_pools["tps"] == 3 * 501
    assert a["resident"].sum() / PAGE == 3 * 7000          # templates and unique stay private
    check_table(host)


@pytest.mark.slow
def test_salting_0_adds_cross_vm_template_and_zero_sharing():
    host, eng = make_host(scenario([{"name": "web", "count": 3, "memory": N10K}], salting=0, content=MIX))
    map_all(host)
    run_for(eng, SCAN + 20)
    a = vm_amounts(host)
    assert np.array_equal(pages_of(a, "shared"), [8000] * 3)
    # zero: 3000 pages on 1 frame; template: 3 per frame; duplicates: 4 per frame (per VM)
    per_vm = 1000 * (1 - 1 / 3000) + 5000 * (2 / 3) + 2000 * (3 / 4)
    np.testing.assert_allclose(pages_of(a, "shared_saved"), per_vm)
    assert a["shared_saved"].sum() / PAGE == pytest.approx(2999 + 10000 + 3 * 1500)
    assert host.host_pools["tps"] == 1 + 5000 + 3 * 500
    check_table(host)


@pytest.mark.slow
def test_salting_1_shares_within_salt_groups_and_among_unsalted_vms():
    n = 4000
    vms = [{"name": "a", "count": 2, "memory": "16000 KiB", "salt": "tenant-a"},
           {"name": "b", "count": 2, "memory": "16000 KiB", "salt": "tenant-b"},
           {"name": "c", "count": 2, "memory": "16000 KiB"}]
    host, eng = make_host(scenario([dict(v) for v in vms], salting=1))
    map_all(host)
    run_for(eng, SCAN + 20)
    a = vm_amounts(host)
    # three scopes (a, b, and the unsalted default), two identical VMs in each
    np.testing.assert_allclose(pages_of(a, "shared_saved"), [n / 2] * 6)
    assert host.host_pools["tps"] == 3 * n
    check_table(host)
    # salting 2: salted groups still share, unsalted VMs fall back to per-VM salts
    host, eng = make_host(scenario([dict(v) for v in vms], salting=2))
    map_all(host)
    run_for(eng, SCAN + 20)
    a = vm_amounts(host)
    np.testing.assert_allclose(pages_of(a, "shared_saved"), [n / 2] * 4 + [0, 0])
    assert np.array_equal(pages_of(a, "shared"), [n] * 4 + [0, 0])
    assert host.host_pools["tps"] == 2 * n
    check_table(host)


def test_unique_content_is_scanned_but_never_shared():
    host, eng = make_host(scenario([{"name": "db", "count": 2, "memory": N10K}], content={"unique": 1.0}))
    map_all(host)
    run_for(eng, SCAN + 20)
    assert host.pages.counts[:, host.plugin_data["tps"].code].sum() == 0
    assert len(host.plugin_data["tps"].index) == 0
    assert host.counters["tps_scanned_pages"].sum() >= 2 * 10000


def test_salting_setting_is_validated():
    with pytest.raises(ConfigError, match="Mem.ShareForceSalting"):
        make_host(scenario([{"name": "web", "count": 1, "memory": N10K}], salting=3))


# --- scan rate ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_scan_covers_a_vm_in_share_scan_time_and_respects_share_rate_max():
    host, eng = make_host(scenario([{"name": "web", "count": 2, "memory": N10K}]))
    map_all(host)
    run_for(eng, 300)
    # 10000 pages in 600 s: half of each VM after 300 s, and half its template pages shared
    scanned = host.counters["tps_scanned_pages"]
    assert np.all(np.abs(scanned - 5000) <= 1)
    assert np.all(np.abs(host.pages.counts[:, host.plugin_data["tps"].code] - 5000) <= 1)
    host, eng = make_host(scenario([{"name": "web", "count": 2, "memory": N10K}],
                              settings={"Mem.ShareRateMax": 5}))
    map_all(host)
    run_for(eng, 300)
    assert np.array_equal(host.counters["tps_scanned_pages"], [1500, 1500])


@pytest.mark.slow
def test_the_scan_runs_in_batches_at_the_same_rate():
    """memtune.share_scan_interval 30 on 10 s ticks: nothing at 10 and 20 s, 30 s of scanning
    (500 pages at 10000 pages per 600 s) at 30 s, and after a full pass the same sharing."""
    batched = {"memtune.share_scan_interval": 30}
    host, eng = make_host(scenario([{"name": "web", "count": 2, "memory": N10K}], settings=batched))
    map_all(host)
    scanned = []
    for _ in range(3):
        eng.step(10.0)
        scanned.append(host.counters.get("tps_scanned_pages", np.zeros(2)).tolist())
    assert scanned == [[0, 0], [0, 0], [500, 500]]
    run_for(eng, SCAN - 10)
    per_tick, eng2 = make_host(scenario([{"name": "web", "count": 2, "memory": N10K}]))
    map_all(per_tick)
    run_for(eng2, SCAN + 20)
    assert np.array_equal(host.pages.counts, per_tick.pages.counts)
    check_table(host)


@pytest.mark.slow
def test_pages_touched_by_the_guest_are_found_without_mapping_by_hand():
    host, eng = make_host(scenario([{"name": "web", "count": 3, "memory": N10K}], content=MIX))
    run_for(eng, 2 * SCAN + 100)       # the first pass misses pages the guest has not touched yet
    a = vm_amounts(host)
    assert host.pages.counts[:, FREE].sum() == 0
    best = 2999 + 10000 + 4500                 # every duplicate found (see the salting 0 test)
    assert 0.999 * best <= a["shared_saved"].sum() / PAGE <= best + 1e-6     # sums of 1 - 1/refcount
    check_table(host)


# --- copy-on-write -------------------------------------------------------------------------------

class Probe:
    """Records events, as the audit plugin would."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict]] = []

    @hookimpl
    def memtune_event(self, host, kind, vm, data):
        self.events.append((kind, vm, data))


@pytest.mark.slow
def test_write_to_shared_page_breaks_the_share():
    probe = Probe()
    n = 10000
    host, eng = make_host(scenario([{"name": "web", "count": 3, "memory": N10K}]), extra=[("probe", probe)])
    map_all(host)
    run_for(eng, SCAN + 20)
    d = host.plugin_data["tps"]
    pg = host.pages
    p0 = int(pg.base[0]) + 17                      # template page 17 of VM 0, shared by 3
    key = tps.content_keys(d, host, np.array([p0]))
    slot = int(d.index.find(key)[0])
    assert pg.state[p0] == d.code and d.index.ref[slot] == 3
    saved0 = vm_amounts(host)["shared_saved"].sum()
    lat = host.serve_fault(d.code, pages=np.array([p0]), write=np.array([True]))
    assert np.array_equal(lat, [3e-6])
    assert pg.state[p0] == RESIDENT and is_unique(pg.content[p0:p0 + 1])[0]
    assert d.index.ref[slot] == 2 and host.host_pools["tps"] == n     # frame kept for the other two
    assert host.counters["cow_breaks"][0] == 1
    # 3 pages on one frame saved 2; now 2 pages on it save 1
    assert saved0 - vm_amounts(host)["shared_saved"].sum() == pytest.approx(PAGE)
    check_table(host)
    # the other two sharers write too: the frame is freed
    others = pg.base[1:3] + 17
    host.serve_fault(d.code, pages=others, write=np.array([True, True]))
    assert d.index.ref[slot] == 0 and host.host_pools["tps"] == n - 1
    check_table(host)
    # one cow-break event per VM in the next tick, with its count
    probe.events.clear()
    eng.step(10.0)
    cows = [(vm, data["pages"]) for kind, vm, data in probe.events if kind == "cow-break"]
    assert sorted(cows) == [(0, 1.0), (1, 1.0), (2, 1.0)]
    # the broken pages are private now and are not shared again (unique content)
    run_for(eng, SCAN)
    assert pg.state[p0] == RESIDENT and pg.state[others].tolist() == [RESIDENT, RESIDENT]


@pytest.mark.slow
def test_guest_writes_charge_cow_breaks_through_the_engine():
    host, eng = make_host(scenario([{"name": "web", "count": 3, "memory": N10K}], write=0.02, touch_rate=2e4))
    map_all(host)
    run_for(eng, SCAN + 20)
    d = host.plugin_data["tps"]
    faults = host.book.faults["shared"]
    assert (faults > 0).all() and (host.counters["cow_breaks"] > 0).all()
    # every page was mapped, so COW breaks are the only extra latency the guests paid
    np.testing.assert_allclose(host.book.extra, faults * 3e-6, rtol=1e-9)
    # after a full pass a private page either holds unique content (written, or broken by COW)
    # or is the hint of its key (the only page seen with it so far)
    res = np.flatnonzero(host.pages.state == RESIDENT)
    assert res.size > 0
    dup = res[~is_unique(host.pages.content[res])]
    slot = d.index.find(tps.content_keys(d, host, dup))
    assert (slot >= 0).all() and np.array_equal(d.index.hint[slot], dup)
    check_table(host)
    assert d.repairs == 0


@pytest.mark.slow
def test_reports_read_the_shared_pages_from_the_log_of_pages_shared():
    # reports list the shared pages from the log the scan keeps (O(shared pages)), pruned of pages
    # a write broke; they must be exactly the pages a scan of every page finds
    host, eng = make_host(scenario([{"name": "web", "count": 3, "memory": N10K}], write=0.0005,
                                   touch_rate=2e4))
    map_all(host)
    run_for(eng, SCAN + 20)
    d = host.plugin_data["tps"]
    pg = host.pages
    every = np.flatnonzero(pg.state == d.code)
    assert host.counters["cow_breaks"].sum() > 0 and every.size > 0  # some shared, some broken
    logged = d.shared_len
    assert np.array_equal(np.sort(tps.shared_pages(host, d)), every)
    assert d.shared_len == every.size < logged  # the broken ones were pruned
    # a page put in the shared state by something other than the scan is still reported
    other = np.flatnonzero(pg.state == RESIDENT)[:1]
    pg.set_state(other, d.code)
    assert np.array_equal(np.sort(tps.shared_pages(host, d)), np.sort(np.concatenate([every, other])))


@pytest.mark.slow
def test_refcounts_are_repaired_if_another_plugin_takes_a_shared_page():
    host, eng = make_host(scenario([{"name": "web", "count": 2, "memory": N10K}]))
    map_all(host)
    run_for(eng, SCAN + 20)
    d = host.plugin_data["tps"]
    taken = host.pages.base[:2] + 5  # both sharers of one frame leave the state behind TPS's back
    host.pages.set_state(taken, RESIDENT)
    eng.step(10.0)
    assert d.repairs == 2
    check_table(host)


# --- large pages -------------------------------------------------------------------------------


@pytest.mark.slow
def test_large_pages_are_not_shared_until_broken():
    vms = [{"name": "web", "count": 3, "memory": N10K}]
    host, eng = make_host(scenario([dict(v) for v in vms], large_pages=True))
    map_all(host)
    run_for(eng, SCAN + 20)
    assert not host.large_pages_broken
    assert host.pages.counts[:, host.plugin_data["tps"].code].sum() == 0
    # a host where free memory is about 2x minFree (HIGH, but below the 400 % break point)
    used = host.vm_pages.sum() * PAGE + host.overhead_bytes
    mem = int(used / 0.88) // PAGE * PAGE
    host, eng = make_host(scenario([dict(v) for v in vms], large_pages=True, host=f"{mem} bytes"))
    map_all(host)
    eng.step(10.0)
    assert host.large_pages_broken and host.state.label == "high"
    run_for(eng, SCAN + 20)
    a = vm_amounts(host)
    np.testing.assert_allclose(pages_of(a, "shared_saved"), 10000 * 2 / 3)
    check_table(host)


# --- reporting ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_match_the_amounts():
    from memtune.plugins.tps import memtune_collect_metrics

    n = 10000
    host, eng = make_host(scenario([{"name": "web", "count": 4, "memory": N10K}]))
    map_all(host)
    run_for(eng, SCAN + 20)
    fams = {f.name: f for f in memtune_collect_metrics(host=host)}
    declared = []
    tps.memtune_register_metrics(register=lambda name, kind, help, labels: declared.append((name, kind)))
    for name, kind in declared:
        base = name[: -len("_total")] if kind == "counter" else name
        assert fams[base].type == kind
    assert fams["memtune_tps_pages_shared"].samples[0].value == n  # KSM pages_shared
    assert fams["memtune_tps_pages_sharing"].samples[0].value == 3 * n  # KSM pages_sharing
    # per-VM sharing is the core's memtune_vm_shared*_bytes / memtune_vm_zero_bytes (report columns)
    from prometheus_client.parser import text_string_to_metric_families

    from memtune.metrics import host_registry

    fams = {f.name: f for f in text_string_to_metric_families(host_registry(host).render_text())}
    val = {s.labels.get("vm", ""): s.value for s in fams["memtune_vm_shared_saved_bytes"].samples}
    assert val == {f"web-0{i}": pytest.approx(n * 0.75 * PAGE) for i in range(1, 5)}
    zero = {s.labels["vm"]: s.value for s in fams["memtune_vm_zero_bytes"].samples}
    assert set(zero.values()) == {0.0}


@pytest.mark.slow
def test_same_seed_same_numbers():
    def once():
        host, eng = make_host(
            scenario([{"name": "web", "count": 3, "memory": N10K}], write=0.02, content=MIX)
        )
        run_for(eng, 400)
        a = vm_amounts(host)
        return a["shared_saved"].tolist(), host.counters["cow_breaks"].tolist(), host.book.extra.tolist()

    assert once() == once()
