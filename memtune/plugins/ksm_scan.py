"""ksmd, the KSM scanner, vectorised (used by the ``ksm`` plugin; rules from mm/ksm.c, Linux 6.x).

- One scanner for the host walks the mergeable pages of all VMs in turn (VMs in the order they
  registered, pages in address order; here VM index and page index). Only pages that are present
  count against ``pages_to_scan``; absent pages (never touched, ballooned, swapped, compressed, or
  mapped to the zero page) are passed over, and their rmap_items freed.
- A visit to a page that is not a KSM page: drop it from the unstable tree; if its checksum
  changed since the previous visit (or this is the first visit), remember the checksum and stop
  (``pages_volatile``); else, with ``use_zero_pages``, a zero page is mapped to the zero page;
  else the page merges into a stable-tree KSM page of the same content that has room
  (``max_page_sharing``), or with a page of the same content waiting in the unstable tree (a new
  KSM page), or waits there itself (``pages_unshared``).
- ``smart_scan``: a page that is not a KSM page and has been visited 3 times or more is skipped
  for 1, 2, 4 or 8 scans (age <= 3, <= 5, <= 8, more); skipped pages do not count against
  ``pages_to_scan``.
- After the last page of the last VM a full scan ends (``full_scans``) and the unstable tree is
  emptied.

A batch is processed in one go: pages of one content are taken in scan order (stable room first,
then pairs), the same order the kernel visits them in. Content changes only between batches
(touches run before the scan in a tick), which is what the kernel sees at this time scale.
"""

from __future__ import annotations

import numpy as np

from memtune.plugin import RESIDENT, Host
from memtune.plugins.ksm_trees import StableTree, UnstableTree

SKIP_AGE = np.array([1, 1, 1, 1, 2, 2, 4, 4, 4] + [8] * 247, dtype=np.uint8)   # mm/ksm.c skip_age()
MAX_PASSES = 4          # full scans processed per tick; more change nothing until content changes


class KSMState:
    """Per-host state of the KSM plugin (``host.plugin_data["ksm"]``)."""

    def __init__(self, host: Host, code: int) -> None:
        n = int(host.pages.state.size)
        self.code = code
        self.checksum = np.full(n, -1, dtype=np.int64)    # content at the last visit; -1: no rmap_item
        self.unstable = np.zeros(n, dtype=bool)           # in the unstable tree (UNSTABLE_FLAG)
        self.zero = np.zeros(n, dtype=bool)               # merged with the kernel zero page
        self.age = np.zeros(n, dtype=np.uint8)
        self.skips = np.zeros(n, dtype=np.uint8)
        self.stable = StableTree()
        self.unstable_tree = UnstableTree()
        self.cursor = 0
        self.budget = 0.0                                 # simulated pages owed to the scanner
        self.full_scans = 0
        self.rmap_items = 0
        self.pages_unshared = 0
        self.zero_pages = 0
        self.scanned = 0.0                                # 4 KiB pages (pages_scanned)
        self.skipped = 0.0
        self.cow_pending = np.zeros(host.nvm)
        # effective knobs (ksmtuned may change them)
        s = host.settings
        self.run = int(s["ksm.run"])
        self.pages_to_scan = int(s["ksm.pages_to_scan"])
        self.sleep_ms = int(s["ksm.sleep_millisecs"])
        self.mps = int(s["ksm.max_page_sharing"])
        self.use_zero = bool(s["ksm.use_zero_pages"])
        self.smart = bool(s["ksm.smart_scan"])
        self.npages = 0                                   # ksmtuned's npages
        self.next_tune = float(s["ksmtuned.KSM_MONITOR_INTERVAL"])
        self.first_merge: float | None = None
        self.tree_share = 0.0                             # visits of the last tick that searched the trees
        self.visits = 0
        self.tree_visits = 0
        self.pass_seen = 0                                # pages counted in the current full scan
        self.last_pass = 0                                # pages counted in the last full scan

    def batch_period(self, host: Host) -> float:
        """Seconds per ksmd batch: the sleep in whole jiffies (msecs_to_jiffies rounds up), the
        wake-up that lands on the next tick, and the work per page: a checksum for every visit, a
        tree search and merge for the share of visits that found their checksum unchanged (the
        last tick's share)."""
        s = host.settings
        jiffy = float(s["memtune.ksm_jiffy"])
        sleep = self.sleep_ms / 1000.0
        if jiffy > 0:
            sleep = (np.ceil(sleep / jiffy - 1e-9) + 1) * jiffy
        per_page = float(s["memtune.ksm_page_cost"]) + self.tree_share * float(s["memtune.ksm_tree_cost"])
        return sleep + self.pages_to_scan * per_page

    def rate(self, host: Host) -> float:
        """Simulated pages visited per second."""
        if self.run != 1 or self.pages_to_scan <= 0:
            return 0.0
        return self.pages_to_scan / self.batch_period(host) / float(host.page_scale)


def present_mask(host: Host, d: KSMState, lo: int, hi: int) -> np.ndarray:
    st = host.pages.state[lo:hi]
    return (st == RESIDENT) | ((st == d.code) & ~d.zero[lo:hi])


def scan(host: Host, d: KSMState, dt: float, now: float) -> np.ndarray:
    """Run ksmd for ``dt`` seconds; returns the pages merged (state already set)."""
    d.budget += d.rate(host) * dt
    d.visits = d.tree_visits = 0
    merged: list[np.ndarray] = []
    passes = 0
    while d.budget >= 1.0 and passes < MAX_PASSES:
        pages, wrapped = _take(host, d, int(d.budget))
        d.budget -= pages.size
        if pages.size:
            merged.append(_visit(host, d, pages))
        if wrapped:
            d.full_scans += 1
            d.unstable_tree.reset()
            passes += 1
            if d.last_pass == 0:                          # nothing present to scan
                d.budget = 0.0
        elif pages.size == 0:
            break
    if passes >= MAX_PASSES and d.last_pass > 0 and d.budget >= d.last_pass:
        # further full scans in this tick find the same pages unchanged: count them only
        extra = int(d.budget // d.last_pass)
        d.full_scans += extra
        d.scanned += extra * d.last_pass * host.page_scale
        d.budget -= extra * d.last_pass
    if d.visits:
        d.tree_share = d.tree_visits / d.visits
    out = np.concatenate(merged) if merged else np.zeros(0, dtype=np.int64)
    if out.size and d.first_merge is None:
        d.first_merge = now
    return out


def _take(host: Host, d: KSMState, want: int) -> tuple[np.ndarray, bool]:
    """The next ``want`` pages ksmd visits from the cursor (stops at the end of a full scan).

    Applies what passing over pages does: rmap_items of absent pages freed, smart-scan ages and
    skips. Returns the visited pages in order and whether the full scan ended.
    """
    n = d.checksum.size
    got: list[np.ndarray] = []
    need = want
    lo = d.cursor
    while need > 0 and lo < n:
        hi = min(n, lo + max(4 * need, 4096))
        present = present_mask(host, d, lo, hi)
        gone = ~present & (d.checksum[lo:hi] >= 0)
        merged = host.pages.state[lo:hi] == d.code
        skip = np.zeros(hi - lo, dtype=bool)
        if d.smart:
            cand = present & ~merged & (d.checksum[lo:hi] >= 0)
            skip = cand & (d.age[lo:hi] >= 3) & (d.skips[lo:hi] > 0)
        counted = present & ~skip
        cum = np.cumsum(counted)
        # stop just past the need-th counted page, or take the whole window
        cut = int(np.searchsorted(cum, need)) + 1 if cum.size and cum[-1] > need else hi - lo
        sl = slice(lo, lo + cut)
        _pass_over(d, sl, gone[:cut], present[:cut] & ~merged[:cut], skip[:cut])
        got.append(np.flatnonzero(counted[:cut]) + lo)
        need -= int(cum[cut - 1]) if cut else 0
        lo += cut
    pages = np.concatenate(got) if got else np.zeros(0, dtype=np.int64)
    d.scanned += pages.size * host.page_scale
    wrapped = lo >= n
    d.cursor = 0 if wrapped else lo
    d.pass_seen += pages.size
    if wrapped:
        d.last_pass, d.pass_seen = d.pass_seen, 0
    return pages, wrapped


def _pass_over(d: KSMState, sl: slice, gone: np.ndarray, fresh: np.ndarray, skip: np.ndarray) -> None:
    """Bookkeeping for the pages the scanner passes: free rmap_items of absent pages, age and skip."""
    idx = np.flatnonzero(gone) + sl.start
    if idx.size:
        d.rmap_items -= idx.size
        d.pages_unshared -= int(np.count_nonzero(d.unstable[idx]))
        d.unstable[idx] = False
        d.checksum[idx] = -1
        d.age[idx] = 0
        d.skips[idx] = 0
    if not d.smart:
        return
    aged = np.flatnonzero(fresh) + sl.start
    if aged.size:
        old = d.age[aged]
        d.age[aged] = np.minimum(old.astype(np.int16) + 1, 255).astype(np.uint8)
        renew = (old >= 3) & (d.skips[aged] == 0)
        d.skips[aged[renew]] = SKIP_AGE[old[renew]]
    sk = np.flatnonzero(skip) + sl.start
    if sk.size:
        d.skips[sk] -= 1
        d.skipped += sk.size
        d.pages_unshared -= int(np.count_nonzero(d.unstable[sk]))
        d.unstable[sk] = False


def _visit(host: Host, d: KSMState, pages: np.ndarray) -> np.ndarray:
    """cmp_and_merge_page() for the visited pages, in scan order; returns the pages merged."""
    pg = host.pages
    d.visits += pages.size
    res = pages[pg.state[pages] == RESIDENT]             # KSM pages: nothing to do
    if res.size == 0:
        return res
    was = d.unstable[res]
    d.pages_unshared -= int(np.count_nonzero(was))
    d.unstable[res] = False
    d.rmap_items += int(np.count_nonzero(d.checksum[res] < 0))
    key = pg.content[res]
    same = d.checksum[res] == key
    d.checksum[res] = key
    cand, ck = res[same], key[same]
    d.tree_visits += cand.size
    merged = []
    if d.use_zero and cand.size:
        z = ck == 0
        zp = cand[z]
        if zp.size:
            d.zero[zp] = True                           # not anon any more: its rmap_item is freed
            d.zero_pages += zp.size                     # when the scan next passes (get_next_rmap_item)
            pg.set_state(zp, d.code)
            merged.append(zp)
        cand, ck = cand[~z], ck[~z]
    if cand.size:
        merged.append(_merge(d, cand, ck, pg))
    return np.concatenate(merged) if merged else np.zeros(0, dtype=np.int64)


def _merge(d: KSMState, cand: np.ndarray, ck: np.ndarray, pg) -> np.ndarray:
    """Stable tree first, then pairs through the unstable tree, per content in scan order."""
    order = np.argsort(ck, kind="stable")               # cand is in scan order
    cand, ck = cand[order], ck[order]
    start = np.flatnonzero(np.concatenate([[True], ck[1:] != ck[:-1]]))
    uk = ck[start]
    cnt = np.diff(np.append(start, ck.size))
    grp = np.repeat(np.arange(uk.size), cnt)
    rank = np.arange(ck.size) - start[grp]
    mps = d.mps
    st = d.stable
    slot = st.find(uk)
    found = slot >= 0
    room = np.zeros(uk.size, dtype=np.int64)
    room[found] = np.maximum(st.frames[slot[found]] * mps - st.ref[slot[found]], 0)
    joins = np.minimum(cnt, room)
    to_stable = rank < joins[grp]
    # the rest pair up: with the page waiting in the unstable tree (if still the same), then each other
    ui = d.unstable_tree.find(uk)
    up = np.full(uk.size, -1, dtype=np.int64)
    up[ui >= 0] = d.unstable_tree.page[ui[ui >= 0]]
    upv = np.maximum(up, 0)
    valid = (up >= 0) & (pg.state[upv] == RESIDENT) & (pg.content[upv] == uk) & d.unstable[upv]
    m = cnt - joins
    t = m + valid
    left = np.where(t >= 2, (t % mps == 1).astype(np.int64), t)     # pages left waiting (0 or 1)
    new_frames = np.where(t >= 2, t // mps + (t % mps >= 2), 0)
    pair = ~to_stable & (rank < (cnt - left * (m > 0))[grp]) & (t >= 2)[grp]
    # a leftover R page waits in the unstable tree; so does a lone page
    wait = ~to_stable & ~pair
    partner = valid & (t >= 2)
    merged = np.concatenate([cand[to_stable | pair], up[partner]])
    d.unstable_tree.take(ui[partner])
    d.pages_unshared -= int(np.count_nonzero(partner))
    d.unstable[up[partner]] = False
    wp, wk = cand[wait], ck[wait]
    if wp.size:
        d.unstable_tree.insert(wk, wp)
        d.unstable[wp] = True
        d.pages_unshared += wp.size
    # stable tree bookkeeping
    added = joins + np.where(t >= 2, t - left, 0)
    upd = found & (added > 0)
    st.ref[slot[upd]] += added[upd]
    st.frames[slot[upd]] += new_frames[upd]
    new = ~found & (added > 0)
    st.add(uk[new], added[new], new_frames[new])
    if merged.size:
        pg.set_state(merged, d.code)
    return merged


def unmerge(host: Host, d: KSMState, pages: np.ndarray) -> None:
    """Pages leaving the KSM state (a write, COW): drop their mappings; a KSM page goes when it
    has no mapping left (approximated per content: at most one KSM page per mapping)."""
    z = d.zero[pages]
    if z.any():
        d.zero[pages[z]] = False
        d.zero_pages -= int(np.count_nonzero(z))
    keys = host.pages.content[pages[~z]]
    if keys.size:
        slot = d.stable.find(keys)
        if (slot < 0).any():
            raise RuntimeError(f"{int((slot < 0).sum())} KSM pages have no stable-tree entry")
        us, c = np.unique(slot, return_counts=True)
        d.stable.ref[us] -= c
        d.stable.frames[us] = np.minimum(d.stable.frames[us], d.stable.ref[us])
