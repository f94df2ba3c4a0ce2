"""Memory compression: keep pages chosen for swap-out in a per-VM compression cache.

ESX 4.1+ tries to compress every page it has chosen to swap out; a page that compresses to 2 KiB or
less is kept in the VM's compression cache instead of going to disk, and the cache of a VM is capped
at ``Mem.MemZipMaxPct`` (10 %) of its configured memory [VMware, "Understanding Memory Resource
Management in VMware vSphere 5.0", s.3.3; vSphere Resource Management guide, "Memory Compression"].

Model:

- The hypervisor cannot see guest LRU, so victims are random resident pages of VMs above target
  (this plugin's own reclaim in the hard and low states, the swap plugin's victims offered through
  ``host.page_out``, and the core's limit enforcement). This plugin is the page-out tier of
  priority 10: the swap tier (90) sees only what it refused.
- A page of compressed-size class 0 (<= 1 KiB) takes a 1 KiB slot, class 1 (<= 2 KiB) a 2 KiB slot;
  worse pages are refused (they go to swap). With ``memtune.compression = "zram"`` (a Linux host's
  zram) every page is kept, in an object of its class's compressed size (``ZRAM_SLOT_BYTES``), and
  the cap is the one device's: original bytes of all VMs together up to ``zram_disksize``; when it
  is full, new pages go to the next tier and old ones stay (no eviction).
  Pages of encrypted VMs are ciphertext to the hypervisor
  and never compress (AMD Memory Encryption white paper, 2016).
- The cache is machine memory the VM holds: a per-VM pool of ``cache_bytes / page_bytes`` pages
  (``host.set_vm_pool("compression", ...)``), so each kept page saves ``page_bytes - slot``.
- When a VM's cache is full, its oldest compressed pages (first in, first out) are decompressed and
  handed to the next page-out tier (``host.page_out(pages, above=10)``) to make room; with no tier
  above, new pages are refused instead.
- A touch of a compressed page is a fault that needs a free machine page: it costs
  ``latency.decompress`` (about 6 us with the fault, lz4 class; Google far memory, ASPLOS 2019).

FIFO order per VM is kept in a ring buffer over the VM's own page range (entries carry a sequence
number; an entry whose page has since left the cache is stale and skipped), so finding the oldest
pages costs O(pages evicted), not O(cache).

Counters (per VM): ``compression_bytes`` (uncompressed bytes compressed), ``decompression_bytes``,
``compression_evicted_bytes`` (uncompressed bytes evicted to the next tier).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.plugin import (
    RESIDENT,
    Knob,
    MemState,
    Setting,
    hookimpl,
    knobs_hook,
    page_out_hook,
    settings_hook,
)

NAME = "compression"
STATE = "compressed"
PRIORITY = 10
# bytes a 4 KiB page of each compressed-size class takes in the cache (0: not kept)
SLOT_BYTES = np.array([1024, 2048, 0, 0], dtype=np.int64)
# Linux zram keeps every page it is given, one that does not compress as a whole page (zsmalloc
# objects of the compressed size in 16-byte size classes; Documentation/admin-guide/blockdev/zram.rst,
# huge pages): lz4 blocks of a page of each class as the live workers write it (memtune.live.content:
# 700 / 1700 / 2700 random bytes, then zeros), 731 / 1733 / 2735 bytes (lz4 -1 on this host)
ZRAM_SLOT_BYTES = np.array([736, 1744, 2736, 4096], dtype=np.int64)

SETTINGS = (
    Setting("Mem.MemZipEnable", "bool", True, "Compress pages chosen for swap-out (memory compression).",
            "ESXi default Mem.MemZipEnable = 1 (vSphere Resource Management guide, Memory Compression)",
            tunable=True),
    Setting("Mem.MemZipMaxPct", "percent", 10,
            "Compression cache cap per VM, percent of its configured memory.",
            "ESXi default Mem.MemZipMaxPct = 10", minimum=5, maximum=100, tunable=True),
    Setting("memtune.compression", "str", "esx",
            "Compression cache rule: esx (keep pages that compress to 2 KiB or less) or zram (Linux: keep "
            "every page, an incompressible one as a whole page).",
            "ESX: Understanding Memory Resource Management in VMware vSphere 5.0, s.3.3; zram: "
            "Documentation/admin-guide/blockdev/zram.rst", choices=("esx", "zram")),
    Setting("latency.decompress", "seconds", 6e-6,
            "Touch of a compressed page: fault plus decompressing 4 KiB (lz4 class).",
            "Lagar-Cavilla et al., Software-Defined Far Memory in Warehouse-Scale Computers, ASPLOS 2019: "
            "~6 us per decompression fault"),
)


@dataclass
class ZipData:
    """Per-host state of the compression plugin (``host.plugin_data["compression"]``)."""

    code: int
    enabled: bool
    resident_only: np.ndarray     # allowed-state table for victim picks
    slot: np.ndarray              # per page: cache bytes the page takes (0: incompressible here)
    cap_bytes: np.ndarray         # per VM: cache cap
    cache_bytes: np.ndarray       # per VM: cache in use
    zseq: np.ndarray              # per page: sequence number while compressed, -1 otherwise
    ring_page: np.ndarray         # per VM ring (over the VM's page range): page of each entry
    ring_seq: np.ndarray          # ... and its sequence number
    head: np.ndarray              # per VM: entries consumed (ring position = head % npages)
    tail: np.ndarray              # per VM: entries written
    seq: int = 0
    disksize: float = np.inf      # zram: the device's cap on original bytes, for all VMs together


def _data(host: Any) -> ZipData | None:
    return host.plugin_data.get(NAME)


memtune_register_settings = settings_hook(SETTINGS)


@hookimpl
def memtune_register_page_states(register: Any) -> None:
    # no frame of its own (the cache is a per-VM pool); a touch decompresses into a new page
    register(STATE, private_frame=False, mapped=False, read_fault=True, write_fault=True,
             fault_allocates=True, fault=decompress)


memtune_register_knobs = knobs_hook((
    Knob("Mem.MemZipEnable", kind="categorical", categories=(True, False), help="memory compression on/off"),
    Knob("Mem.MemZipMaxPct", kind="int", low=5, high=50,
         help="compression cache cap, percent of configured memory"),
))


@hookimpl
def memtune_configure(host: Any) -> None:
    s = host.settings
    pg = host.pages
    zram = s.get("memtune.compression", "esx") == "zram"
    table = ZRAM_SLOT_BYTES if zram else SLOT_BYTES
    slot = table[np.minimum(pg.zclass, 3)] * pg.scale
    slot[np.repeat(host.encrypted, host.vm_pages)] = 0
    memory = np.array([v.memory for v in host.vms], dtype=np.float64)
    host.plugin_data[NAME] = ZipData(
        code=host.states.code(STATE),
        enabled=bool(s["Mem.MemZipEnable"]),
        resident_only=host.states.table(RESIDENT),
        slot=slot,
        cap_bytes=memory * s["Mem.MemZipMaxPct"] / 100.0,
        cache_bytes=np.zeros(host.nvm),
        zseq=np.full(pg.total, -1, dtype=np.int64),
        ring_page=np.zeros(pg.total, dtype=np.int64),
        ring_seq=np.full(pg.total, -2, dtype=np.int64),
        head=np.zeros(host.nvm, dtype=np.int64),
        tail=np.zeros(host.nvm, dtype=np.int64),
        disksize=zram_disksize(host) if zram else np.inf,
    )
    host.set_vm_pool(NAME, np.zeros(host.nvm))


def zram_disksize(host: Any) -> float:
    """Original bytes one zram device holds for the host (its ``disksize``): ``Mem.MemZipMaxPct`` of
    each VM's memory is cache memory, which holds cap x 4 KiB / (the VM's mean object) of pages.
    The Linux driver sizes its device with this; ``mem_limit`` is not used (zram then fails writes
    instead of spilling to the next swap device)."""
    pg = host.pages
    caps = np.array([v.memory for v in host.vms], dtype=np.float64) * host.settings["Mem.MemZipMaxPct"] / 100
    obj = ZRAM_SLOT_BYTES[np.minimum(pg.zclass, 3)].astype(np.float64)
    mean = np.bincount(pg.vm, weights=obj, minlength=host.nvm) / np.maximum(pg.npages, 1)
    return float((caps * 4096 / np.maximum(mean, 1.0)).sum())


def _take_zram(d: ZipData, host: Any, pages: np.ndarray, cand: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """zram is one swap device for the host, capped in original bytes (``disksize``): it keeps
    offered pages while it has room, a random share of them when it has room for fewer; a full
    device takes nothing and the kernel swaps to the next device (no writeback of old pages on
    this kernel: ``backing_dev`` absent, Documentation/admin-guide/blockdev/zram.rst)."""
    held = float(host.pages.counts[:, d.code].sum()) * host.page_bytes
    k = int(max(d.disksize - held, 0.0) // host.page_bytes)
    if k < cand.size:
        cand = np.sort(host.rng(NAME).permutation(cand)[:k])
    if cand.size:
        _insert(d, host, pages[cand])
        taken[cand] = True
    _publish(d, host)
    return taken


# --- the cache ---------------------------------------------------------------------------------

def _group_pos(vm: np.ndarray, nvm: int) -> tuple[np.ndarray, np.ndarray]:
    """Order grouping entries by VM (stable) and each entry's position inside its VM group."""
    order = np.argsort(vm, kind="stable")
    svm = vm[order]
    first = np.searchsorted(svm, np.arange(nvm))
    pos = np.empty(vm.size, dtype=np.int64)
    pos[order] = np.arange(vm.size) - first[svm]
    return order, pos


def _compact(d: ZipData, host: Any, vms: np.ndarray) -> None:
    """Drop stale entries from the rings of ``vms`` (rare: only when a ring is full)."""
    pg = host.pages
    for v in vms:
        n = int(pg.npages[v])
        b = int(pg.base[v])
        idx = b + (int(d.head[v]) + np.arange(int(d.tail[v] - d.head[v]))) % n
        pages, seqs = d.ring_page[idx], d.ring_seq[idx]
        live = d.zseq[pages] == seqs
        k = int(live.sum())
        d.ring_page[b:b + k] = pages[live]
        d.ring_seq[b:b + k] = seqs[live]
        d.head[v], d.tail[v] = 0, k


def _insert(d: ZipData, host: Any, pages: np.ndarray) -> None:
    """Put resident ``pages`` into their VMs' caches (room was checked by the caller)."""
    pg = host.pages
    nvm = host.nvm
    vm = pg.vm[pages].astype(np.int64)
    add = np.bincount(vm, minlength=nvm)
    full = np.flatnonzero(d.tail - d.head + add > pg.npages)
    if full.size:
        _compact(d, host, full)
    _, pos = _group_pos(vm, nvm)
    idx = pg.base[vm] + (d.tail[vm] + pos) % pg.npages[vm]
    seqs = d.seq + np.arange(pages.size, dtype=np.int64)
    d.seq += pages.size
    d.ring_page[idx] = pages
    d.ring_seq[idx] = seqs
    d.zseq[pages] = seqs
    d.tail += add
    sizes = d.slot[pages].astype(np.float64)
    d.cache_bytes += np.bincount(vm, weights=sizes, minlength=nvm)
    pg.set_state(pages, d.code)
    host.count_per_vm("compression_bytes", add.astype(np.float64) * host.page_bytes)


def _remove(d: ZipData, host: Any, pages: np.ndarray) -> None:
    """Take compressed ``pages`` out of the cache and make them resident again."""
    vm = host.pages.vm[pages]
    d.cache_bytes -= np.bincount(vm, weights=d.slot[pages].astype(np.float64), minlength=host.nvm)
    np.maximum(d.cache_bytes, 0.0, out=d.cache_bytes)
    d.zseq[pages] = -1
    host.pages.set_state(pages, RESIDENT)


def _oldest(d: ZipData, host: Any, want_bytes: np.ndarray) -> np.ndarray:
    """Oldest compressed pages of each VM whose slots add up to at least ``want_bytes[v]``.

    Entries are consumed from the ring head; stale ones are skipped.
    """
    pg = host.pages
    want = want_bytes.astype(np.float64).copy()
    out: list[np.ndarray] = []
    min_slot = float(SLOT_BYTES[0] * pg.scale)
    while True:
        occ = d.tail - d.head
        vms = np.flatnonzero((want > 0) & (occ > 0))
        if vms.size == 0:
            break
        w = np.minimum(occ[vms], np.maximum(64, 2 * np.ceil(want[vms] / min_slot))).astype(np.int64)
        group = np.repeat(np.arange(vms.size), w)      # window entries, VM by VM
        rep = vms[group]
        first = np.cumsum(w) - w
        idx = pg.base[rep] + (d.head[rep] + np.arange(rep.size) - first[group]) % pg.npages[rep]
        pages = d.ring_page[idx]
        live = d.zseq[pages] == d.ring_seq[idx]
        size = np.where(live, d.slot[pages], 0).astype(np.float64)
        csum = np.cumsum(size)
        before = csum - size - (csum[first] - size[first])[group]   # bytes earlier in this VM's window
        consumed = before < want[rep]                                # a prefix of each window
        take = consumed & live
        d.head[vms] += np.bincount(group, weights=consumed, minlength=vms.size).astype(np.int64)
        want[vms] -= np.bincount(group, weights=np.where(take, size, 0.0), minlength=vms.size)
        out.append(pages[take])
    if not out:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(out)


def _has_tier_above(host: Any) -> bool:
    return any(t.priority > PRIORITY for t in host.tiers)


def take_pages(host: Any, pages: np.ndarray) -> np.ndarray:
    """Page-out tier: keep offered pages that compress to <= 2 KiB while the VM's cache has room,
    evicting the oldest compressed pages to the next tier when it is full."""
    d = _data(host)
    taken = np.zeros(pages.size, dtype=bool)
    if d is None or not d.enabled or pages.size == 0:
        return taken
    pg = host.pages
    nvm = host.nvm
    ok = d.slot[pages] > 0
    if not ok.any():
        return taken
    cand = np.flatnonzero(ok)
    if np.isfinite(d.disksize):
        return _take_zram(d, host, pages, cand, taken)
    vm = pg.vm[pages[cand]].astype(np.int64)
    size = d.slot[pages[cand]].astype(np.float64)
    want = np.bincount(vm, weights=size, minlength=nvm)
    short = want - (d.cap_bytes - d.cache_bytes)
    if (short > 0).any() and _has_tier_above(host):
        old = _oldest(d, host, np.maximum(short, 0.0))
        if old.size:
            _remove(d, host, old)
            gone = host.page_out(old, above=PRIORITY)
            back = old[~gone]
            if back.size:                      # the next tier refused: keep them compressed
                _insert(d, host, back)
            evicted = old[gone]
            host.count_per_vm("compression_evicted_bytes",
                              np.bincount(pg.vm[evicted], minlength=nvm).astype(np.float64) * host.page_bytes)
    # accept candidates in offer order while the VM's cache has room
    order, _ = _group_pos(vm, nvm)
    svm, ssize = vm[order], size[order]
    csum = np.cumsum(ssize)
    gstart = np.searchsorted(svm, svm)          # first entry of each entry's VM group
    within = csum - (csum[gstart] - ssize[gstart])
    fits = within <= (d.cap_bytes - d.cache_bytes)[svm] + 1e-6
    accepted = cand[order[fits]]
    if accepted.size:
        _insert(d, host, pages[accepted])
        taken[accepted] = True
    _publish(d, host)
    return taken


memtune_register_page_out = page_out_hook(NAME, PRIORITY, take_pages)


def _publish(d: ZipData, host: Any) -> None:
    host.set_vm_pool(NAME, d.cache_bytes / host.page_bytes)


@hookimpl
def memtune_reclaim(host: Any, state: int, need: np.ndarray) -> None:
    """In the hard and low states, try random victims of VMs above target for the cache."""
    d = _data(host)
    if d is None or not d.enabled or state < MemState.HARD:
        return
    room = d.cache_bytes < d.cap_bytes
    if np.isfinite(d.disksize):
        room[:] = host.pages.counts[:, d.code].sum() * host.page_bytes < d.disksize
    want = np.where(host.powered & room, np.floor(need + 1e-9), 0).astype(np.int64)
    if not (want > 0).any():
        return
    victims = host.pick_victims(host.rng(NAME), np.maximum(want, 0), d.resident_only)
    if victims.size == 0:
        return
    before = host.held()
    take_pages(host, victims)
    freed = before - host.held()
    need -= freed
    np.maximum(need, 0.0, out=need)
    if (freed > 0).any():
        host.emit("reclaim", None, technique=NAME,

                                       bytes={host.vm_names[v]: float(freed[v] * host.page_bytes)
                                              for v in np.flatnonzero(freed > 0)})


def decompress(host: Any, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
    """Fault handler of ``compressed``: decompress touched pages into new machine pages."""
    d = _data(host)
    _remove(d, host, pages)
    _publish(d, host)
    host.count_per_vm(
        "decompression_bytes",
        np.bincount(host.pages.vm[pages], minlength=host.nvm).astype(np.float64) * host.page_bytes,
    )
    return np.full(pages.size, host.settings["latency.decompress"])


@hookimpl
def memtune_vm_columns(host: Any) -> dict[str, np.ndarray] | None:
    d = _data(host)
    if d is None:
        return None
    compressed = host.pages.counts[:, d.code] * float(host.page_bytes)
    return {"compression_cache": d.cache_bytes.copy(), "compression_saved": compressed - d.cache_bytes}
