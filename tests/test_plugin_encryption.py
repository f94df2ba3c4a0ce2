"""Memory encryption: encrypted VMs share nothing, compress nothing, pay a per-access overhead
and a per-page crypto cost on hypervisor swap-in."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARING_ONLY, build_scenario, make_host, map_all, run_for

from memtune.core.contents import is_unique
from memtune.core.report import vm_amounts
from memtune.plugins import encryption
from memtune.testing import FixedLatencyState

PAGE = 4096
N = 10000                       # pages per VM ("40000 KiB")
DRAM = 100e-9


def scenario(*, encrypted=(False, False, True), content=None, touch_rate=1e5, settings=None, write=0.0):
    wl = {"allocated": 1.0, "wss": 1.0, "touch_rate": touch_rate, "write_fraction": write,
          "content": content or {"zero": 0.2, "template": 0.6, "unique": 0.2},
          "compressibility": {"le_1k": 0.4, "le_2k": 0.3, "le_3k": 0.2, "worse": 0.1}}
    vms = [{"name": f"vm{i}", "memory": "40000 KiB", "workload": "w", "image": "linux",
            "large_pages": False, "encrypted": e} for i, e in enumerate(encrypted)]
    return build_scenario(
        vms,
        name="enc-test",
        memory="4 GiB",
        duration="30m",
        tick="10s",
        seed=3,
        page_scale=1,
        settings={"Mem.ShareForceSalting": 0, "Mem.ShareScanTime": 10, **(settings or {})},
        workload=wl,
        tiny_workload=False,
        vm_defaults={},
        report_interval=None,
        source="<enc-test>",
    )


def test_encrypted_vm_shares_nothing_even_with_identical_vms_and_salting_0():
    host, eng = make_host(scenario())
    pg = host.pages
    enc = host.vm_slice(2)
    assert is_unique(pg.content[enc]).all()
    assert not is_unique(pg.content[host.vm_slice(0)]).all()
    map_all(host)
    run_for(eng, 620)
    a = vm_amounts(host)
    # the two plain VMs share zero pages (4000 on one frame) and templates (2 per frame);
    # the encrypted one shares nothing, not even its zero pages
    assert a["shared"][2] == 0 and a["shared_saved"][2] == 0 and a["zero"][2] == 0
    assert np.array_equal(a["shared"][:2] / PAGE, [8000, 8000])
    assert a["shared_saved"][:2].sum() / PAGE == pytest.approx(3999 + 6000)
    assert a["resident"][2] / PAGE == N


def test_encryption_off_the_same_vm_would_share():
    host, eng = make_host(scenario(encrypted=(False, False, False)))
    map_all(host)
    run_for(eng, 620)
    a = vm_amounts(host)
    # three plain VMs: 6000 zero pages on one frame, templates 3 per frame
    assert a["shared_saved"].sum() / PAGE == pytest.approx(5999 + 2 * 6000)


def test_ciphertext_is_incompressible_and_writes_keep_it_unique():
    host, eng = make_host(scenario(write=0.3))
    pg = host.pages
    assert (pg.zclass[host.vm_slice(2)] == encryption.CIPHERTEXT_ZCLASS).all()
    # the plain VMs keep their mix (70 % of pages compress to 2 KiB or less, zero pages to 1 KiB)
    plain = pg.zclass[host.vm_slice(0)]
    assert 0.7 <= (plain <= 1).mean() < 0.8
    plain_before = pg.content[host.vm_slice(0)].copy()
    run_for(eng, 120)
    assert (pg.content[host.vm_slice(0)] != plain_before).sum() > 1000  # the guests wrote
    after = pg.content[host.vm_slice(2)]
    assert is_unique(after).all() and np.unique(after).size == N
    assert (pg.zclass[host.vm_slice(2)] == encryption.CIPHERTEXT_ZCLASS).all()
    assert vm_amounts(host)["shared"][2] == 0


def test_encrypted_vm_pays_the_access_overhead_on_every_touch():
    host, eng = make_host(scenario(touch_rate=1e6), disable=SHARING_ONLY)
    map_all(host)  # no faults (no writes): only the access overhead remains
    run_for(eng, 120)
    book = host.book
    mean = book.mean_extra()
    assert mean[2] == pytest.approx(0.05 * DRAM)
    assert mean[0] == 0 and mean[1] == 0
    # stall: 5 ns on each of 1e6 touches per second
    assert book.stall_fraction()[2] == pytest.approx(0.05 * DRAM * 1e6)
    host, eng = make_host(
        scenario(touch_rate=1e6, settings={"encryption.access_overhead_pct": 2.0}), disable=SHARING_ONLY
    )
    map_all(host)
    run_for(eng, 60)
    assert host.book.mean_extra()[2] == pytest.approx(0.02 * DRAM)


def fake_swap() -> FixedLatencyState:
    """A minimal hypervisor swap: a ``swapped`` state served at a fixed device latency (150 us)."""
    return FixedLatencyState("swapped", 150e-6)


def test_swap_in_of_an_encrypted_page_pays_the_crypto_cost():
    host, eng = make_host(
        scenario(encrypted=(False, True, False), touch_rate=1e6),
        disable=SHARING_ONLY,
        extra=[("fakeswap", fake_swap())],
    )
    code = host.states.code("swapped")
    map_all(host)
    pg = host.pages
    for v in range(3):
        sl = host.vm_slice(v)
        pg.set_state(np.arange(sl.start, sl.stop)[::2], code)  # half of each VM swapped out
    # the hook itself: 1 us for the encrypted VM's pages only
    pages = np.array([pg.base[0], pg.base[1], pg.base[2]])
    extra = [
        x
        for x in host.hook.memtune_fault_latency(
            host=host, state=code, pages=pages, latency=np.full(3, 150e-6)
        )
        if x is not None
    ]
    assert len(extra) == 1 and np.array_equal(extra[0], [0.0, 1e-6, 0.0])
    # through the engine: every swap-in of VM 1 costs 151 us, every touch 5 ns more
    run_for(eng, 60)
    book = host.book
    faults = book.faults["swapped"]
    assert (faults > 0).all()
    np.testing.assert_allclose(book.extra[[0, 2]], faults[[0, 2]] * 150e-6, rtol=1e-9)
    np.testing.assert_allclose(book.extra[1], faults[1] * 151e-6 + book.touches[1] * 0.05 * DRAM, rtol=1e-9)
    swapped_in = host.counters["encrypted_swap_in_pages"]
    # 1e6 touches/s over 10000 pages for 60 s reach every swapped page of VM 1 (plus the one page of
    # the direct hook call above); the draws find all but the last few, which only a draw landing
    # on one of them brings back
    assert swapped_in[0] == 0 and swapped_in[2] == 0 and 0.99 * N / 2 <= swapped_in[1] - 1 <= N / 2


def test_no_swap_state_means_no_crypto_cost():
    host, eng = make_host(scenario(), disable=SHARING_ONLY)
    assert host.states.code("swapped") is None
    assert host.hook.memtune_fault_latency(host=host, state=1, pages=np.array([0]), latency=np.zeros(1)) == []
    run_for(eng, 30)
    assert "encrypted_swap_in_pages" not in host.counters


def test_metrics():
    host, eng = make_host(scenario())
    fams = {f.name: f for f in encryption.memtune_collect_metrics(host=host)}
    enc = {s.labels["vm"]: s.value for s in fams["memtune_encryption_encrypted"].samples}
    assert enc == {"vm0": 0.0, "vm1": 0.0, "vm2": 1.0}
    # decrypted swap-ins are the core counter memtune_vm_encrypted_swap_in_pages_total (host.count)
    assert list(fams) == ["memtune_encryption_encrypted"]
