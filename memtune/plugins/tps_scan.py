"""The page-sharing scanner: visit pages at the scan rate, match content keys, share, index.

Rules (Waldspurger, OSDI 2002, section 4.2; vSphere Resource Management guide, "Memory Sharing"):
each VM is scanned from its cursor at ``min(pages / Mem.ShareScanTime, Mem.ShareRateMax)``; only
private resident pages with content that can match are candidates; a key seen once leaves a *hint*,
a second match (hint still good: ESX re-hashes the hinted page) shares both on one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memtune.plugin import RESIDENT, Host, is_unique
from memtune.plugins.tps_state import TPSState, content_keys, log_shared


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


def scan(host: Host, d: TPSState, dt: float, now: float) -> None:
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
    log_shared(d, new_pages)
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
