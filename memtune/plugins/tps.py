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
- Unique content (``contents.is_unique``) can never match; such pages are scanned but not inserted.

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

from typing import Any

import numpy as np

from memtune.plugin import (
    RESIDENT,
    Host,
    Knob,
    Setting,
    hookimpl,
    host_gauge,
    metrics_hook,
    settings_hook,
    unique_content,
)
from memtune.plugins.tps_scan import scan
from memtune.plugins.tps_state import (
    NAME,
    STATE,
    TPSState,
    content_keys,
    reconcile,
    release,
    salt_scopes,
    shared_pages,
    state_of,
)

__all__ = ["NAME", "STATE", "TPSState", "content_keys", "salt_scopes", "shared_pages", "sharing_amounts",
           "cow_break"]

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
    d = state_of(host)
    reconcile(host, d)
    _emit_cow(host, d, now)
    d.since_scan += dt
    if d.since_scan >= host.settings["memtune.share_scan_interval"] - 1e-9:
        scan(host, d, d.since_scan, now)
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


# --- faults: copy-on-write -------------------------------------------------------------------------


def cow_break(host: Host, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
    """Fault handler of ``shared``: break the share of written pages: private copy with unique content,
    refcount down.

    A shared page faults only on a write (it is mapped for reads), and companion pages the engine
    adds to a write fault stand for the other writes of that draw, so every page handed in is
    broken, whatever its ``write`` flag.
    """
    d = state_of(host)
    if pages.size == 0:
        return np.zeros(0)
    release(host, d, pages)
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
    d = state_of(host)
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
    d = state_of(host)
    scale = float(host.page_scale)
    return [
        host_gauge(METRICS[0][0], METRICS[0][2], value=d.frames * scale),
        host_gauge(METRICS[1][0], METRICS[1][2], value=(d.total_ref - d.frames) * scale),
    ]
