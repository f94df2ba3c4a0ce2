"""Memory compression: which pages are kept, the per-VM cap, the cache as machine memory, FIFO
eviction to swap, decompression on touch. Expected numbers follow from the defaults:

- 1 GiB VMs at page_scale 16: one simulated page is 64 KiB = 16 pages of 4 KiB, so a page of
  class 0 (<= 1 KiB per 4 KiB) takes 16 KiB of cache and one of class 1 (<= 2 KiB) 32 KiB;
- the cap is Mem.MemZipMaxPct = 10 % of 1 GiB = 107374182.4 bytes per VM;
- a touch of a compressed page costs latency.decompress = 6 us.

Pages are offered straight to the compression tier (as the swap plugin and the core do) on a host
whose guest memory is all mapped.
"""

from __future__ import annotations

import numpy as np
import pytest

from memtune.core.memstate import MemState
from memtune.core.pages import RESIDENT
from memtune.plugins import compression

PB = 65536
CAP = 0.1 * 2**30
SLOT = {0: 16384, 1: 32768}


@pytest.fixture
def mapped(scenario_of, host_of):
    def make(vms=None, *, swap=False, **kw):
        sc = scenario_of(vms or [{"name": "a"}, {"name": "b"}], **kw)
        others = ["tps", "balloon", "encryption", "audit"] + ([] if swap else ["swap"])
        host, engine = host_of(sc, disable=others)
        host.workload.advance(0.0)
        host.pages.set_state(np.arange(host.pages.total), RESIDENT)
        return host

    return make


def cache(host):
    return host.plugin_data["compression"].cache_bytes


def test_keeps_only_pages_of_2k_or_less_and_saves_the_rest(mapped, pages_conserved):
    host = mapped()
    pages = host.pages.base[0] + np.arange(1000)
    zc = host.pages.zclass[pages]
    assert (zc == 0).any() and (zc == 1).any() and (zc >= 2).any()     # a mixed offer
    held = host.held()
    taken = host.page_out(pages)
    np.testing.assert_array_equal(taken, zc <= 1)
    code = host.states.code("compressed")
    assert (host.pages.state[pages[taken]] == code).all()
    assert (host.pages.state[pages[~taken]] == RESIDENT).all()
    want = (zc == 0).sum() * SLOT[0] + (zc == 1).sum() * SLOT[1]
    assert cache(host).tolist() == [want, 0]
    # the cache is machine memory the VM holds: each kept page saves 64 KiB minus its slot
    np.testing.assert_allclose(held - host.held(), [taken.sum() - want / PB, 0])
    np.testing.assert_allclose(host.vm_pools["compression"] * PB, [want, 0])
    assert host.counters["compression_bytes"].tolist() == [taken.sum() * PB, 0]
    pages_conserved(host)


def test_cache_never_exceeds_its_cap(mapped, pages_conserved):
    host = mapped()
    everything = host.pages.base[0] + np.arange(16384)
    for chunk in np.array_split(everything, 8):
        host.page_out(chunk)
        assert cache(host)[0] <= CAP
    assert CAP - SLOT[1] < cache(host)[0]          # full to within one slot
    # with no tier above to evict to, a full cache refuses new pages
    code = host.states.code("compressed")
    left = everything[host.pages.state[everything] == RESIDENT]
    assert not host.page_out(left).any()
    assert host.pages.counts[0, code] > 0 and cache(host)[0] <= CAP
    pages_conserved(host)


def test_max_pct_setting_sets_the_cap(mapped):
    host = mapped(settings={"Mem.MemZipMaxPct": 5})
    host.page_out(host.pages.base[0] + np.arange(16384))
    assert 0.05 * 2**30 - SLOT[1] < cache(host)[0] <= 0.05 * 2**30


def test_full_cache_evicts_its_oldest_pages_to_swap(mapped, pages_conserved):
    host = mapped(swap=True)
    vm0 = host.pages.base[0] + np.arange(16384)
    ok = vm0[host.pages.zclass[vm0] <= 1]            # compressible pages, offered in this order
    first, later = ok[:6000], ok[6000:6100]
    took = compression.take_pages(host, first)
    kept = first[took]                               # insertion order = offer order
    assert not took[-1] and cache(host)[0] > CAP - SLOT[1]
    cache0 = cache(host)[0]
    took2 = compression.take_pages(host, later)
    assert took2.all()                               # room was made for every new page
    swapped = host.states.code("swapped")
    gone = np.flatnonzero(host.pages.state[kept] == swapped)
    # exactly the oldest ones went to swap, no more than needed
    np.testing.assert_array_equal(gone, np.arange(gone.size))
    need_bytes = sum(SLOT[int(c)] for c in host.pages.zclass[later]) - (CAP - cache0)
    freed = sum(SLOT[int(c)] for c in host.pages.zclass[kept[:gone.size]])
    assert freed >= need_bytes > freed - SLOT[int(host.pages.zclass[kept[gone.size - 1]])]
    assert cache(host)[0] <= CAP
    assert host.counters["compression_evicted_bytes"][0] == gone.size * PB
    assert host.counters["swap_out_bytes"][0] == gone.size * PB
    pages_conserved(host)


def test_touch_decompresses_into_a_new_page(mapped, pages_conserved):
    host = mapped()
    pages = host.pages.base[1] + np.arange(200)
    taken = host.page_out(pages)
    code = host.states.code("compressed")
    touched = pages[taken][:5]
    before = cache(host)[1]
    assert host.states[code].fault_allocates
    lat = host.serve_fault(code, pages=touched, write=np.zeros(5, bool))
    assert lat.tolist() == [6e-6] * 5
    assert (host.pages.state[touched] == RESIDENT).all()
    slots = sum(SLOT[int(c)] for c in host.pages.zclass[touched])
    assert cache(host)[1] == before - slots
    np.testing.assert_allclose(host.vm_pools["compression"][1] * PB, before - slots)
    assert host.counters["decompression_bytes"].tolist() == [0, 5 * PB]
    pages_conserved(host)


def test_disabled_compression_keeps_nothing(mapped):
    host = mapped(settings={"Mem.MemZipEnable": False})
    assert not host.page_out(host.pages.base[0] + np.arange(1000)).any()
    need = np.array([500.0, 500.0])
    compression.memtune_reclaim(host=host, state=int(MemState.HARD), need=need)
    assert need.tolist() == [500.0, 500.0] and cache(host).tolist() == [0, 0]


def test_encrypted_memory_does_not_compress(mapped):
    host = mapped([{"name": "plain"}, {"name": "sev", "encrypted": True}])
    taken = host.page_out(np.concatenate([host.pages.base[0] + np.arange(500),
                                          host.pages.base[1] + np.arange(500)]))
    assert taken[:500].any() and not taken[500:].any()


def test_reclaims_only_in_hard_and_low_and_only_from_vms_above_target(mapped):
    host = mapped()
    for state in (MemState.HIGH, MemState.CLEAR, MemState.SOFT):
        need = np.array([300.0, 0.0])
        compression.memtune_reclaim(host=host, state=int(state), need=need)
        assert need.tolist() == [300.0, 0.0]
    assert host.pages.counts[:, host.states.code("compressed")].tolist() == [0, 0]
    need = np.array([300.0, 0.0])
    held = host.held()
    compression.memtune_reclaim(host=host, state=int(MemState.HARD), need=need)
    # 300 random victims; zero pages (10 %) and 60 % of the rest compress to <= 2 KiB, so about
    # 300 * 0.64 = 192 are kept (binomial sd 8.3); each kept page saves 1/2 or 3/4 of a page
    code = host.states.code("compressed")
    n = host.pages.counts[0, code]
    assert host.pages.counts[1, code] == 0 and 160 <= n <= 225
    np.testing.assert_allclose(300.0 - need[0], (held - host.held())[0])
    assert n * 0.5 <= 300.0 - need[0] <= n * 0.75


def exposed(host):
    """The families Prometheus gets for ``host`` (core and plugins), by name."""
    from prometheus_client.parser import text_string_to_metric_families

    from memtune.metrics import host_registry

    return {f.name: f for f in text_string_to_metric_families(host_registry(host).render_text())}


def test_metrics(mapped):
    host = mapped()
    taken = host.page_out(host.pages.base[0] + np.arange(100))
    fams = exposed(host)
    val = {s.labels["vm"]: s.value for s in fams["memtune_vm_compression_cache_bytes"].samples}
    assert val == {"a": cache(host)[0], "b": 0.0}
    comp = {s.labels["vm"]: s.value for s in fams["memtune_vm_compressed_bytes"].samples}
    assert comp == {"a": taken.sum() * PB, "b": 0.0}


def test_fifo_order_survives_ring_compaction(mapped, pages_conserved):
    """The FIFO ring of a VM has one entry per page of the VM (16384); 20 rounds of compressing and
    decompressing 1000 pages leave 20000 entries, so the ring is compacted on the way."""
    host = mapped(swap=True)
    code = host.states.code("compressed")
    vm0 = host.pages.base[0] + np.arange(16384)
    ok = vm0[host.pages.zclass[vm0] <= 1]
    for i in range(20):
        batch = ok[(i * 1000) % 9000 : (i * 1000) % 9000 + 1000]
        taken = compression.take_pages(host, batch)
        host.serve_fault(code, pages=batch[taken], write=np.zeros(int(taken.sum()), bool))
    assert cache(host)[0] == 0 and host.pages.counts[0, code] == 0
    took = compression.take_pages(host, ok[:6000])
    kept = ok[:6000][took]
    compression.take_pages(host, ok[6000:6100])
    gone = np.flatnonzero(host.pages.state[kept] == host.states.code("swapped"))
    assert gone.size > 0
    np.testing.assert_array_equal(gone, np.arange(gone.size))
    comp = host.pages.state[vm0] == code
    assert cache(host)[0] == sum(SLOT[int(c)] for c in host.pages.zclass[vm0][comp])
    pages_conserved(host)
