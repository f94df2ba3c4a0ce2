"""Mechanisms the live comparison moved or mapped: zram's compression rule in the model, and the
reservation the Linux driver enforces with ``mlock2`` in the worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.plugins.compression import take_pages


def _host(mode: str):
    wl = {"allocated": 0.8, "wss": 0.3, "touch_rate": 100,
          "content": {"zero": 0.0, "template": 0.0, "duplicate": 0.0, "unique": 1.0},
          "compressibility": {"le_1k": 0.25, "le_2k": 0.25, "le_3k": 0.25, "worse": 0.25}}
    data = {"name": "zram-rule", "duration": "60s", "tick": "5s", "seed": 3,
            "host": {"memory": "256 MiB", "page_scale": 1},
            "settings": {"memtune.compression": mode, "Mem.MemZipMaxPct": 100, "memtune.warm_start": True},
            "workloads": {"w": wl}, "vm": [{"name": "a", "memory": "64 MiB", "workload": "w"}]}
    host = build_host(scenario_from_dict(data, "<test>"), seed=3)
    host.pm.hook.memtune_configure(host=host)
    return host


@pytest.mark.parametrize("mode, kept", [("esx", (0, 1)), ("zram", (0, 1, 2, 3))])
def test_compression_rule(mode, kept):
    """ESX keeps pages that compress to 2 KiB or less; zram keeps every page, an incompressible
    one in a whole page (it saves nothing)."""
    host = _host(mode)
    pg = host.pages
    resident = np.flatnonzero(pg.state == host.states.code("resident"))
    offer = np.concatenate([resident[pg.zclass[resident] == c][:50] for c in range(4)])
    taken = take_pages(host, offer)
    for c in range(4):
        assert taken[pg.zclass[offer] == c].all() == (c in kept)
        assert taken[pg.zclass[offer] == c].any() == (c in kept)
    d = host.plugin_data["compression"]
    worse = offer[taken & (pg.zclass[offer] == 3)]
    assert (d.slot[worse] == 4096 * pg.scale).all()


def test_zram_is_one_device_for_the_host_and_a_full_one_refuses():
    """zram's cap is the device's (original bytes of every VM together, ``zram_disksize``, which the
    Linux driver gives its device): one VM may fill it; a full device takes nothing more and keeps
    its old pages (the kernel then swaps to the next device). ESX caps each VM's cache and evicts its
    oldest pages. On scaled ``db`` the kernel's zram was full (86 MiB in both seeds) where the
    model's per-VM caches held 58-87 MiB."""
    from memtune.plugins.compression import zram_disksize

    wl = {"allocated": 1.0, "wss": 0.3, "touch_rate": 100,
          "content": {"zero": 0.0, "template": 0.0, "duplicate": 0.0, "unique": 1.0},
          "compressibility": {"le_1k": 0.5, "le_2k": 0.5, "le_3k": 0.0, "worse": 0.0}}
    data = {"name": "zram-device", "duration": "60s", "tick": "5s", "seed": 3,
            "host": {"memory": "256 MiB", "page_scale": 1},
            "settings": {"memtune.compression": "zram", "Mem.MemZipMaxPct": 10, "memtune.warm_start": True},
            "workloads": {"w": wl}, "vm": [{"name": n, "memory": "32 MiB", "workload": "w"} for n in "ab"]}
    host = build_host(scenario_from_dict(data, "<test>"), seed=3)
    host.pm.hook.memtune_configure(host=host)
    pg, d = host.pages, host.plugin_data["compression"]
    disk = zram_disksize(host)
    assert d.disksize == disk and 2 * 3.2 * 2**20 * 4096 / 1744 < disk < 2 * 3.2 * 2**20 * 4096 / 736
    a = np.flatnonzero((pg.vm == 0) & (pg.state == host.states.code("resident")))
    taken = take_pages(host, a)
    held = pg.counts[:, d.code].copy()
    assert held[1] == 0 and held[0] == int(disk // 4096) == taken.sum()    # VM a alone fills it
    assert d.cache_bytes[0] > d.cap_bytes[0]                                # beyond a's own cap
    b = np.flatnonzero((pg.vm == 1) & (pg.state == host.states.code("resident")))[:100]
    assert not take_pages(host, b).any() and pg.counts[0, d.code] == held[0]   # full: refused, no eviction


def test_zram_objects_are_the_workers_pages_compressed():
    """The model's zram object per class (``ZRAM_SLOT_BYTES``) is what lz4 makes of a page of that
    class as the live workers write it (``memtune.live.content.fill``), in zsmalloc's 16-byte size
    classes. The class's upper bound (1, 2, 3 KiB), used before, put the model's cache at 0.64 of the
    original bytes on scaled ``small`` where this host's zram held 0.54-0.57 (seeds 1-2)."""
    import shutil
    import subprocess

    from memtune.live.content import fill
    from memtune.plugins.compression import ZRAM_SLOT_BYTES

    if shutil.which("lz4") is None:
        pytest.skip("no lz4 command (Debian package lz4)")
    keys = np.arange(1, 9, dtype=np.int64) << 20
    for c in range(3):
        out = np.zeros((keys.size, 4096), dtype=np.uint8)
        fill(out, keys, np.full(keys.size, c))
        for page in out:
            frame = subprocess.run(["lz4", "-1", "-c", "-B4", "--no-frame-crc"], input=page.tobytes(),
                                   capture_output=True, check=True).stdout
            block = len(frame) - 15                  # frame header (7), block size (4), end mark (4)
            assert ZRAM_SLOT_BYTES[c] - 16 < block <= ZRAM_SLOT_BYTES[c]
    assert ZRAM_SLOT_BYTES[3] == 4096


def test_reservation_is_locked(tmp_path):
    """The worker's reserved ranks are mlocked once touched; balloon and page-out leave them."""
    from memtune.live.guest import GuestMemory

    n, locked = 256, 64
    keys = np.arange(1, n + 1, dtype=np.int64)
    mem = GuestMemory(n, keys, np.zeros(n, dtype=np.int64), False, str(tmp_path / "g.swap"), locked=locked)
    mem.write_content(np.arange(n))
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    assert int(status["VmLck"].split()[0]) >= locked * 4
    mem.set_balloon(n, allocated=n, coldness=np.arange(n))      # asks for every page, coldest first
    assert mem.backed[:locked].all() and not mem.swapped[:locked].any()
    assert mem.swapped[locked:].all()


def test_cold_victims():
    """A Linux host's reclaim (``memtune.host_victims = "cold"``) takes pages outside the hot window;
    ESX's random victims land in it in proportion to its size."""
    out = {}
    for mode in ("random", "cold"):
        host = _host("esx")
        host.settings["memtune.host_victims"] = mode
        v = host.pick_victims(host.rng("t"), np.array([200]), host.states.table("resident"))
        assert v.size == 200 and np.unique(v).size == 200
        out[mode] = float(host.touch_probability(v).mean())
    assert out["cold"] < 0.2 * out["random"]


def _worker(tmp_path, v: int):
    from memtune.live.control_block import ControlBlock
    from memtune.live.worker import Worker

    n = 64
    np.savez(tmp_path / f"c{v}.npz", keys=np.zeros(n, dtype=np.int64), zclass=np.zeros(n, dtype=np.int64),
             resident=np.ones(n, dtype=bool))
    ControlBlock(tmp_path / f"w{v}.ctl", create=True)
    wl = {"allocated": 0.8, "wss": 0.3, "hot_share": 0.9, "touch_rate": 100, "write_fraction": 1.0,
          "content": (0.0, 1.0, 0.0, 0.0), "compressibility": (1.0, 0.0, 0.0, 0.0)}
    from memtune.core.workload import WorkloadSpec
    from memtune.live.spawn import workload_dict

    sampling = {"size": 10, "period": 1.0, "fast": 0.5, "slow": 0.1}
    cfg = {"ctl": str(tmp_path / f"w{v}.ctl"), "content": str(tmp_path / f"c{v}.npz"), "pages": n,
           "mergeable": False, "guest_swap": str(tmp_path / f"g{v}"),
           "workload": workload_dict(WorkloadSpec(**wl)), "start": 0.0, "seed": 1, "vm_index": v,
           "sampling": sampling}
    return Worker(cfg)


def test_writes_make_pages_unique(tmp_path):
    """The same page written in two VMs (or twice in one) differs afterwards, as the model's write
    makes a page unique: KSM must not merge written copies again."""
    a, b = _worker(tmp_path, 0), _worker(tmp_path, 1)
    ranks = np.arange(8)
    sa, sb, sa2 = a._stamps(ranks), b._stamps(ranks), a._stamps(ranks)
    assert np.unique(np.concatenate([sa, sb, sa2])).size == 24
    a.mem.pages.view(np.uint64)[ranks, 8] = sa
    b.mem.pages.view(np.uint64)[ranks, 8] = sb
    assert not (a.mem.pages[ranks] == b.mem.pages[ranks]).all(axis=1).any()


def test_host_page_out_takes_free_then_cold_never_the_reservation(tmp_path):
    """The hard state's page-out (ESX swaps a VM down to its target; cold victims as a Linux host's
    LRU): resident guest-free pages first, then in-use pages coldest first, never locked ones, and
    never a page the guest already gave up."""
    from memtune.live.guest import GuestMemory

    n, locked, allocated = 64, 8, 48
    keys = np.arange(1, n + 1, dtype=np.int64)
    mem = GuestMemory(n, keys, np.zeros(n, dtype=np.int64), False, str(tmp_path / "g.swap"), locked=locked)
    mem.write_content(np.arange(n))
    resident = np.ones(n, dtype=bool)
    resident[[50, 60]] = False                       # already in the host's swap
    mem.backed[[40, 41]] = False                     # given up by the guest (balloon)
    coldness = np.arange(allocated)[::-1]            # rank 47 coldest ... rank 0 hottest
    free = [r for r in range(allocated, n) if r not in (50, 60)]
    got = mem.host_victims(len(free) + 5, allocated, coldness, resident)
    assert got.tolist() == sorted(free + [47, 46, 45, 44, 43])
    every = mem.host_victims(n, allocated, coldness, resident)
    assert set(every.tolist()) == set(range(locked, n)) - {40, 41, 50, 60}
    assert mem.host_victims(3, allocated, coldness, resident).tolist() == free[:3]


def test_zram_share_follows_each_vms_swap():
    """A VM holds zram's memory in proportion to its cgroup's swap (zram and the swap file share it
    in the ratio of their contents), as the model counts a VM's compression cache as its own."""
    from memtune.live.measure import Sample, zram_share

    class G:
        def __init__(self, swap: int) -> None:
            self.swap = swap

        def stat(self) -> dict[str, int]:
            return {"swap": self.swap}

    s = Sample(t=0.0, used=0, other=0, zram_used=30, held=[0, 0], ksm={}, zram={"orig_data_size": 60},
               swaps={"/x/host.swap": {"used": 40}})
    share = zram_share([G(80), G(20)], s, "/x/host.swap")
    assert share.tolist() == [24.0, 6.0]              # 100 swapped, 60 % in zram at half size
    assert zram_share([G(80)], Sample(0.0, 0, 0, 0, [0], {}, {}, {}), "/x/host.swap").tolist() == [0.0]
