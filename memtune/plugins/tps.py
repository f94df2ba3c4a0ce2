"""Transparent page sharing (TPS): content-based sharing of identical pages, copy-on-write.

Model (Waldspurger, OSDI 2002, section 4; vSphere Resource Management guide, "Memory Sharing"):

- A scanner walks each VM's pages at a bounded rate: the whole VM within ``Mem.ShareScanTime``
  minutes, at most ``Mem.ShareRateMax`` 4 KiB pages per second per VM. Each VM keeps a cursor. The
  scan is applied in batches every ``memtune.share_scan_interval`` (30 s): the same sharing as a
  batch per tick, at a sixth of the cost on 5 s ticks.
- Only private resident pages are candidates. Pages of a VM backed by 2 MB large pages are not
  shareable until the host breaks large pages (``host.large_pages_broken``).
- A page's content key is (salt scope, content id). ``Mem.ShareForceSalting``: 0 = one scope for
  all VMs; 1 = VMs with the same ``sched.mem.pshare.salt`` share, VMs without a salt use salt 0
  (they share with each other); 2 (default since 2015) = the salt if set, else a per-VM salt
  (vc.uuid), i.e. sharing only inside each VM.
- The hash table maps key -> shared frame (refcount) or a *hint*: the first page seen with a key
  stays private and is only remembered; when a later page matches, the hint is checked (still
  resident, same content: ESX re-hashes the hinted page) and both become shared on one frame.
- A write to a shared page breaks the share (copy-on-write): the page gets a private copy and
  unique content, the frame's refcount drops, the frame is freed at zero.
- Unique content (``pages.is_unique``) can never match; such pages are scanned but not inserted.

The table is a sorted array of keys (a large main level plus a small recent level merged in batches,
so inserting costs amortised O(1) per key) over slot arrays (refcount, hint page). Everything per
tick is numpy over the scanned batch and the faulting pages; the per-VM SHRDSVD / consumed split
(sum of 1 - 1/refcount and 1/refcount over a VM's shared pages) is computed at snapshot time,
over the pages the scan logged as shared (pruned of those a write broke since), not over every page.

esxtop / KSM names: shared pages = SHRD (``shared`` page state), saved = SHRDSVD
(``shared_saved``), ``zero`` = ZERO; host-wide frames in use = KSM ``pages_shared``, pages mapping
them beyond the first = KSM ``pages_sharing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.plugin import (
    CONTENT_BITS,
    RESIDENT,
    ConfigError,
    Host,
    Knob,
    Setting,
    hookimpl,
    host_gauge,
    is_unique,
    metrics_hook,
    settings_hook,
    unique_content,
)
from memtune.plugins.tps_index import ShareIndex

NAME = "tps"
STATE = "shared"
MAX_SCOPES = 1 << (63 - CONTENT_BITS)      # salt scopes that fit above the content id in an int64

SETTINGS = (
    Setting("Mem.ShareScanTime", "int", 60,
            "Minutes within which an entire VM is scanned for page-sharing opportunities.",
            "vSphere Resource Management guide, Advanced Memory Attributes: Mem.ShareScanTime "
            "default 60 minutes (esxcli range 10-600)", minimum=10, maximum=600, tunable=True),
    Setting("Mem.ShareRateMax", "int", 1024,
            "Upper limit on the page-sharing scan rate per VM, in 4 KiB pages per second.",
            "ESXi advanced option Mem.ShareRateMax: per-VM upper limit on pshare scan rate, "
            "default 1024 pages/s", minimum=0, maximum=32768, tunable=True),
    Setting("Mem.ShareForceSalting", "int", 2,
            "Page-sharing salting: 0 = share across all VMs, 1 = across VMs with the same "
            "sched.mem.pshare.salt (no salt = salt 0), 2 = salt if set, else per VM (intra-VM only).",
            "VMware KB 2097593 and vSphere Resource Management guide: Mem.ShareForceSalting, "
            "default 2 since ESXi 5.5 U2d / 6.0 (2015)", choices=(0, 1, 2), tunable=True),
    Setting("memtune.share_scan_interval", "seconds", 30,
            "The scanner's work is applied in batches: every interval, the pages its rate allowed since "
            "the last batch.",
            "model choice: a 60-minute scan covers 0.8 % of a VM per 30 s batch; stall and memory "
            "saved agree with a batch every tick within the seed spread (docs/model.md, Page sharing)",
            minimum=0),
    Setting("latency.cow_break", "seconds", 3e-6,
            "A write to a shared page: write fault, new machine page and a 4 KiB copy (COW break).",
            "~1 us EPT/NPT fault and exit + ~1 us page allocation + 4 KiB memcpy at ~14 GB/s "
            "(0.3 us); docs/model.md, Latency defaults"),
)

METRICS = (
    ("memtune_tps_pages_shared", "gauge",
     "Shared frames in use, in 4 KiB pages (node_exporter node_ksmd_pages_shared).", ()),
    ("memtune_tps_pages_sharing", "gauge",
     "Pages mapping a shared frame beyond its first, in 4 KiB pages: pages saved "
     "(node_exporter node_ksmd_pages_sharing).", ()),
)


class TPSState:
    """Per-host state of the sharing plugin (kept at ``host.plugin_data["tps"]``)."""

    def __init__(self, host: Host) -> None:
        s = host.settings
        self.code = int(host.states.code(STATE))
        self.scope = salt_scopes(host)
        self.index = ShareIndex()
        self.cursor = np.zeros(host.nvm, dtype=np.int64)
        self.budget = np.zeros(host.nvm, dtype=np.float64)
        self.since_scan = 0.0                        # seconds of scanning owed to the next batch
        scan_time = float(s["Mem.ShareScanTime"]) * 60.0
        self.rate = np.minimum(host.vm_pages / scan_time, s["Mem.ShareRateMax"] / host.page_scale)
        self.total_ref = 0                           # pages in the shared state, per the table
        self.frames = 0                              # shared frames held (host pool)
        self.cow_pending = np.zeros(host.nvm)        # COW breaks this tick, in 4 KiB pages
        self.repairs = 0
        # pages put in the shared state, in the order shared; pages that left it since (COW breaks)
        # are pruned when the log is read, so reports cost O(shared pages), not O(memory)
        self.shared_log = np.zeros(1024, dtype=np.int64)
        self.shared_len = 0


def salt_scopes(host: Host) -> np.ndarray:
    """Salt scope of each VM under ``Mem.ShareForceSalting`` (pages share only inside a scope)."""
    mode = int(host.settings["Mem.ShareForceSalting"])
    salts = [v.salt for v in host.vms]
    names = sorted({s for s in salts if s})
    salt_id = {s: i + 1 for i, s in enumerate(names)}     # 0 is the "no salt" default
    if mode == 0:
        scope = np.zeros(host.nvm, dtype=np.int64)
    elif mode == 1:
        scope = np.array([salt_id.get(s, 0) if s else 0 for s in salts], dtype=np.int64)
    else:
        scope = np.array([salt_id[s] if s else len(names) + 1 + i for i, s in enumerate(salts)],
                         dtype=np.int64)
    if scope.size and scope.max() >= MAX_SCOPES:
        raise ConfigError(f"too many page-sharing salt scopes ({int(scope.max()) + 1}, at most {MAX_SCOPES})",
                          source=host.scenario.source, field="settings.Mem.ShareForceSalting")
    return scope


def content_keys(d: TPSState, host: Host, pages: np.ndarray) -> np.ndarray:
    """(salt scope, content id) of each page, as one int64."""
    return (d.scope[host.pages.vm[pages]] << CONTENT_BITS) | host.pages.content[pages]


def _data(host: Host) -> TPSState:
    return host.plugin_data[NAME]


# --- registration ----------------------------------------------------------------------------------

memtune_register_settings = settings_hook(SETTINGS)


@hookimpl
def memtune_register_page_states(register: Any) -> None:
    """``shared``: mapped read-only on a frame other pages map too; a write faults (COW) and needs
    a new machine page."""
    register(STATE, private_frame=False, mapped=True, read_fault=False, write_fault=True,
             fault_allocates=True, fault=cow_break)


@hookimpl
def memtune_register_knobs(register: Any, scenario: Any) -> None:
    if scenario.settings.get("memtune.sharing", NAME) != NAME:      # the ksm plugin shares instead
        return
    register(Knob("Mem.ShareForceSalting", kind="categorical", categories=(0, 1, 2),
                  help="page-sharing scope: all VMs, salt groups, or inside each VM"))
    register(Knob("Mem.ShareScanTime", kind="int", low=10, high=600, prior="log-uniform",
                  help="minutes to scan a whole VM for sharing"))
    register(Knob("Mem.ShareRateMax", kind="int", low=128, high=8192, prior="log-uniform",
                  help="per-VM sharing scan rate cap, 4 KiB pages/s"))


memtune_register_metrics = metrics_hook(METRICS)


# --- lifecycle -----------------------------------------------------------------------------------

@hookimpl
def memtune_configure(host: Host) -> None:
    if host.settings.get("memtune.sharing", NAME) != NAME:          # the ksm plugin shares instead
        return
    host.plugin_data[NAME] = TPSState(host)
    host.set_host_pool(NAME, 0.0)


@hookimpl
def memtune_tick(host: Host, now: float, dt: float) -> None:
    if NAME not in host.plugin_data:
        return
    d = _data(host)
    _reconcile(host, d)
    _emit_cow(host, d, now)
    d.since_scan += dt
    if d.since_scan >= host.settings["memtune.share_scan_interval"] - 1e-9:
        _scan(host, d, d.since_scan, now)
        d.since_scan = 0.0
    host.set_host_pool(NAME, float(d.frames))


def _emit_cow(host: Host, d: TPSState, now: float) -> None:
    """One ``cow-break`` event per VM per tick with the breaks served during its touches."""
    if not d.cow_pending.any():
        return
    pb4 = 4096
    for v in np.flatnonzero(d.cow_pending):
        pages = float(d.cow_pending[v])
        host.emit("cow-break", int(v), pages=pages, bytes=pages * pb4, time=now)
    d.cow_pending[:] = 0


@dataclass
class BatchMatches:
    """The scanned candidates grouped by content key, with what the index holds for each key."""

    keys: np.ndarray           # distinct content keys of the batch, sorted
    first: np.ndarray          # index in the sorted candidates of each key's first page
    count: np.ndarray          # candidates with each key
    slot: np.ndarray           # the key's index slot, -1 if new
    ref: np.ndarray            # pages already mapping the key's shared frame (0: no frame)
    hint_page: np.ndarray      # the remembered (hinted) page of the key, 0 if none
    hint_ok: np.ndarray        # the hinted page is still private with the same content
    share: np.ndarray          # the key's pages become shared now

    @property
    def found(self) -> np.ndarray:
        return self.slot >= 0

    @property
    def has_frame(self) -> np.ndarray:
        return self.ref > 0

    @property
    def sharers(self) -> np.ndarray:
        """Pages that join each key's frame: this batch's plus a still-good hinted page."""
        return self.count + self.hint_ok


def _scan(host: Host, d: TPSState, dt: float, now: float) -> None:
    """One batch of the scanner: visit pages at the scan rate, share those whose content matches."""
    candidates = _visit(host, d, dt)
    if candidates.size == 0:
        return
    candidates, m = _match(host, d, candidates)
    _share(host, d, candidates, m, now)
    _update_index(d, candidates, m)
    if d.index.needs_merge():
        _merge_index(host, d)


def _visit(host: Host, d: TPSState, dt: float) -> np.ndarray:
    """Pages the scan rate allows since the last batch, VM by VM from each cursor; of them, the
    private resident pages whose content could match another page's."""
    pg = host.pages
    eligible = host.powered & (~host.large_pages | host.large_pages_broken)
    d.budget += np.where(eligible, d.rate * dt, 0.0)
    per_vm = np.minimum(np.floor(d.budget).astype(np.int64), host.vm_pages)
    d.budget -= per_vm
    total = int(per_vm.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    host.count_per_vm("tps_scanned_pages", per_vm * float(host.page_scale))
    vm = np.arange(host.nvm, dtype=np.int64).repeat(per_vm)
    step = np.arange(total, dtype=np.int64) - (per_vm.cumsum() - per_vm).repeat(per_vm)
    rank = (d.cursor[vm] + step) % host.vm_pages[vm]
    d.cursor = (d.cursor + per_vm) % host.vm_pages
    pages = pg.base[vm] + rank
    resident = pages[pg.state[pages] == RESIDENT]
    return resident[~is_unique(pg.content[resident])]


def _match(host: Host, d: TPSState, candidates: np.ndarray) -> tuple[np.ndarray, BatchMatches]:
    """Candidates sorted by content key (then page), and per distinct key what the index holds."""
    pg = host.pages
    keys = content_keys(d, host, candidates)
    order = np.lexsort((candidates, keys))
    keys, candidates = keys[order], candidates[order]
    first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))   # keys are sorted
    batch_keys, count = keys[first], np.diff(np.append(first, keys.size))
    idx = d.index
    slot = idx.find(batch_keys)
    found = slot >= 0
    slot_or_0 = np.where(found, slot, 0)
    ref = np.where(found, idx.ref[slot_or_0], 0)
    hint = np.where(found, idx.hint[slot_or_0], -1)
    hint_page = np.maximum(hint, 0)
    # a hint is good if its page is still private with the same content (ESX re-hashes it)
    hint_ok = (ref <= 0) & (hint >= 0)
    hint_ok &= ((pg.state[hint_page] == RESIDENT) & (content_keys(d, host, hint_page) == batch_keys)
                & ~pg.member(hint_page, candidates))
    share = (ref > 0) | (count + hint_ok >= 2)
    return candidates, BatchMatches(batch_keys, first, count, slot, ref, hint_page, hint_ok, share)


def _share(host: Host, d: TPSState, candidates: np.ndarray, m: BatchMatches, now: float) -> None:
    """Map the pages of every shared key (and good hinted pages) to its frame."""
    pg = host.pages
    new_pages = np.concatenate([candidates[np.repeat(m.share, m.count)], m.hint_page[m.share & m.hint_ok]])
    if new_pages.size == 0:
        return
    new_frames = int(np.count_nonzero(m.share & ~m.has_frame))
    pg.set_state(new_pages, d.code)
    _log_shared(d, new_pages)
    d.total_ref += int(new_pages.size)
    d.frames += new_frames
    per_vm = np.bincount(pg.vm[new_pages], minlength=host.nvm) * float(host.page_scale)
    host.count_per_vm("tps_shared_pages", per_vm)
    host.emit("share", None, pages={host.vm_names[v]: float(per_vm[v]) for v in np.flatnonzero(per_vm)},
              frames=new_frames, time=now)


def _update_index(d: TPSState, candidates: np.ndarray, m: BatchMatches) -> None:
    """Known keys gain sharers or move their hint to the page just seen; new keys get a frame
    when two or more pages matched in this batch, else a hint."""
    idx = d.index
    joined = m.found & m.share
    idx.ref[m.slot[joined]] = m.ref[joined] + m.sharers[joined]
    idx.hint[m.slot[joined]] = -1
    rehint = m.found & ~m.share
    idx.hint[m.slot[rehint]] = candidates[m.first[rehint]]
    new = ~m.found
    idx.insert(m.keys[new], np.where(m.share[new], m.count[new], 0),
               np.where(m.share[new], -1, candidates[m.first[new]]))


def _merge_index(host: Host, d: TPSState) -> None:
    """Merge the index's levels, keeping only hints whose page still holds the key's content."""
    idx = d.index
    pg = host.pages
    hint = idx.hint[: idx.size]
    hint_page = np.maximum(hint, 0)
    key_of_slot = np.empty(idx.size, dtype=np.int64)
    key_of_slot[idx.main_slots] = idx.main_keys
    key_of_slot[idx.new_slots] = idx.new_keys
    still_good = ((hint >= 0) & (pg.state[hint_page] == RESIDENT)
                  & (content_keys(d, host, hint_page) == key_of_slot))
    idx.merge(keep_hint=still_good)


def _log_shared(d: TPSState, pages: np.ndarray) -> None:
    n = d.shared_len + pages.size
    if n > d.shared_log.size:
        grown = np.zeros(max(n, 2 * d.shared_log.size), dtype=np.int64)
        grown[: d.shared_len] = d.shared_log[: d.shared_len]
        d.shared_log = grown
    d.shared_log[d.shared_len : n] = pages
    d.shared_len = n


def shared_pages(host: Host, d: TPSState) -> np.ndarray:
    """The pages in the shared state, read from the log of pages shared (and the log pruned)."""
    pg = host.pages
    log = d.shared_log[: d.shared_len]
    sp = log[pg.state[log] == d.code]
    sp = sp[pg.first_seen(sp)]  # shared, broken by a write and shared again: logged twice
    if sp.size != int(pg.counts[:, d.code].sum()):  # put in the state by something else
        sp = np.flatnonzero(pg.state == d.code)
    d.shared_log[: sp.size] = sp
    d.shared_len = sp.size
    return sp


def _release(host: Host, d: TPSState, pages: np.ndarray) -> None:
    """Drop ``pages`` (leaving the shared state) from their frames' refcounts; free empty frames."""
    idx = d.index
    slot = idx.find(content_keys(d, host, pages))
    if (slot < 0).any():
        raise RuntimeError(f"{int((slot < 0).sum())} shared pages have no frame in the sharing table")
    us, drop = np.unique(slot, return_counts=True)
    left = idx.ref[us] - drop
    d.frames -= int(np.count_nonzero((left <= 0) & (idx.ref[us] > 0)))
    idx.ref[us] = np.maximum(left, 0)
    d.total_ref -= int(pages.size)


def _reconcile(host: Host, d: TPSState) -> None:
    """Repair refcounts if shared pages left the state through another plugin (should not happen:
    reclamation takes resident pages only). Costs nothing unless the counts disagree."""
    n = int(host.pages.counts[:, d.code].sum())
    if n == d.total_ref:
        return
    idx = d.index
    sp = shared_pages(host, d)
    slot = idx.find(content_keys(d, host, sp))
    idx.ref[: idx.size] = 0
    us, c = np.unique(slot[slot >= 0], return_counts=True)
    idx.ref[us] = c
    d.frames = int(us.size)
    d.repairs += abs(d.total_ref - n)
    host.emit("tps-refcount-repair", None, expected=d.total_ref, found=n)
    d.total_ref = n


# --- faults: copy-on-write -------------------------------------------------------------------------


def cow_break(host: Host, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
    """Fault handler of ``shared``: break the share of written pages: private copy with unique content,
    refcount down.

    A shared page faults only on a write (it is mapped for reads), and companion pages the engine
    adds to a write fault stand for the other writes of that draw, so every page handed in is
    broken, whatever its ``write`` flag.
    """
    d = _data(host)
    if pages.size == 0:
        return np.zeros(0)
    _release(host, d, pages)
    host.pages.set_state(pages, RESIDENT)
    host.pages.content[pages] = unique_content(pages)
    per_vm = np.bincount(host.pages.vm[pages], minlength=host.nvm) * float(host.page_scale)
    host.count_per_vm("cow_breaks", per_vm)
    d.cow_pending += per_vm
    host.set_host_pool(NAME, float(d.frames))
    return np.full(pages.size, float(host.settings["latency.cow_break"]))


# --- reporting -------------------------------------------------------------------------------------


def sharing_amounts(host: Host) -> dict[str, np.ndarray]:
    """Per-VM bytes: shared, shared_saved (SHRDSVD), shared_consumed (share of frames), zero."""
    d = _data(host)
    pg = host.pages
    pb = float(host.page_bytes)
    sp = shared_pages(host, d)
    vm = pg.vm[sp]
    slot = d.index.find(content_keys(d, host, sp))
    ref = np.maximum(d.index.ref[np.maximum(slot, 0)], 1).astype(np.float64)
    n = host.nvm
    return {
        "shared": np.bincount(vm, minlength=n) * pb,
        "shared_saved": np.bincount(vm, weights=1.0 - 1.0 / ref, minlength=n) * pb,
        "shared_consumed": np.bincount(vm, weights=1.0 / ref, minlength=n) * pb,
        "zero": np.bincount(vm[pg.content[sp] == 0], minlength=n) * pb,
    }


@hookimpl
def memtune_vm_columns(host: Host) -> dict[str, np.ndarray] | None:
    if NAME not in host.plugin_data:
        return None
    a = sharing_amounts(host)
    return {"shared_saved": a["shared_saved"], "shared_consumed": a["shared_consumed"], "zero": a["zero"]}


@hookimpl
def memtune_collect_metrics(host: Host) -> list | None:
    if NAME not in host.plugin_data:
        return None
    d = _data(host)
    scale = float(host.page_scale)
    return [
        host_gauge(METRICS[0][0], METRICS[0][2], value=d.frames * scale),
        host_gauge(METRICS[1][0], METRICS[1][2], value=(d.total_ref - d.frames) * scale),
    ]
