"""Per-host state of transparent page sharing: salt scopes, content keys, frames and refcounts.

A page's content key is (salt scope, content id) in one int64 (Waldspurger, OSDI 2002, section 4.1;
scopes per ``Mem.ShareForceSalting``, VMware KB 2097593). A shared frame's refcount is the number of
pages mapping it; the frame is freed when it drops to zero (copy-on-write, section 4.2).
"""

from __future__ import annotations

import numpy as np

from memtune.plugin import CONTENT_BITS, ConfigError, Host
from memtune.plugins.tps_index import ShareIndex

NAME = "tps"                                 # the plugin's name: its key in ``host.plugin_data``
STATE = "shared"                             # the page state of pages mapping a shared frame
MAX_SCOPES = 1 << (63 - CONTENT_BITS)      # salt scopes that fit above the content id in an int64


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


def state_of(host: Host) -> TPSState:
    """The sharing state of ``host`` (set up by the plugin's ``memtune_configure``)."""
    return host.plugin_data[NAME]


def log_shared(d: TPSState, pages: np.ndarray) -> None:
    """Append ``pages`` (just put in the shared state) to the log of shared pages."""
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


def release(host: Host, d: TPSState, pages: np.ndarray) -> None:
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


def reconcile(host: Host, d: TPSState) -> None:
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
