"""Linux KSM (kernel samepage merging), the sharing mode of KVM hosts; an alternative to ``tps``.

Chosen per scenario with ``memtune.sharing = "ksm"`` (default ``"tps"``: the ESX scanner). Both
plugins are built-ins; the one not chosen does nothing. Knobs carry the sysfs names of
/sys/kernel/mm/ksm (``ksm.pages_to_scan`` ...) and ksmtuned.conf's (``ksmtuned.KSM_NPAGES_BOOST``
...). Sources: Documentation/admin-guide/mm/ksm.rst and mm/ksm.c (Linux 6.x); ksmtuned, the
script shipped with qemu-kvm/ksmtuned (Red Hat, 2009). The scanner is in ``ksm_scan``, the trees in
``ksm_trees``, ksmtuned in ``ksmtuned``. Counters follow the kernel's definitions: pages_shared
(KSM pages), pages_sharing (further mappings of them), pages_unshared (waiting in the unstable
tree), pages_volatile (rmap_items in neither tree), general_profit ((pages_sharing +
ksm_zero_pages) * 4 KiB - rmap_items * 64 bytes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memtune.plugin import (
    RESIDENT,
    Host,
    Knob,
    hookimpl,
    host_counter,
    host_gauge,
    metrics_hook,
    settings_hook,
    unique_content,
)
from memtune.plugins import ksmtuned
from memtune.plugins.ksm_scan import KSMState, scan, unmerge
from memtune.plugins.ksm_settings import KNOBS, METRICS, SETTINGS, mode

NAME = "ksm"
STATE = "merged"
RMAP_ITEM_BYTES = 64          # sizeof(struct ksm_rmap_item) on 64-bit


def _data(host: Host) -> KSMState | None:
    return host.plugin_data.get(NAME)


memtune_register_settings = settings_hook(SETTINGS)


@hookimpl
def memtune_register_page_states(register: Any) -> None:
    """``merged``: mapped read-only to a KSM page (or the zero page); a write faults (COW)."""
    register(STATE, private_frame=False, mapped=True, read_fault=False, write_fault=True,
             fault_allocates=True, fault=cow_break)


@hookimpl
def memtune_register_knobs(register: Any, scenario: Any) -> None:
    if mode(scenario.settings) != NAME:
        return
    for k in KNOBS:
        register(k if isinstance(k, Knob) else Knob(**k))


memtune_register_metrics = metrics_hook(METRICS)


@hookimpl
def memtune_configure(host: Host) -> None:
    if mode(host.settings) != NAME:
        return
    host.plugin_data[NAME] = KSMState(host, int(host.states.code(STATE)))
    host.set_host_pool(NAME, 0.0)


@hookimpl
def memtune_tick(host: Host, now: float, dt: float) -> None:
    d = _data(host)
    if d is None:
        return
    _reconcile(host, d)
    if d.cow_pending.any():
        for v in np.flatnonzero(d.cow_pending):
            host.emit(
                "cow-break",
                int(v),
                pages=float(d.cow_pending[v]),
                bytes=float(d.cow_pending[v]) * 4096,
                time=now,
            )
        d.cow_pending[:] = 0
    ksmtuned.maybe_adjust(host, d, now)
    merged = scan(host, d, dt, now)
    if merged.size:
        per_vm = np.bincount(host.pages.vm[merged], minlength=host.nvm) * float(host.page_scale)
        host.count_per_vm("ksm_merged_pages", per_vm)
    host.set_host_pool(NAME, float(d.stable.pages_shared()))


def _reconcile(host: Host, d: KSMState) -> None:
    """Rebuild mappings if KSM pages left the state through another plugin (reclamation takes
    resident pages only, so this should not happen). Costs nothing unless the counts disagree."""
    n = int(host.pages.counts[:, d.code].sum())
    if n == d.stable.mappings() + d.zero_pages:
        return
    pg = host.pages
    merged = pg.state == d.code
    d.zero &= merged
    d.zero_pages = int(np.count_nonzero(d.zero))
    keys = pg.content[merged & ~d.zero]
    slot = d.stable.find(keys)
    d.stable.ref[:] = 0
    us, c = np.unique(slot[slot >= 0], return_counts=True)
    d.stable.ref[us] = c
    d.stable.frames = np.minimum(d.stable.frames, d.stable.ref)
    host.emit("ksm-refcount-repair", None, found=n)


def cow_break(host: Host, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
    """Fault handler of ``merged``: a write to a KSM page (or the zero page) copies it into a private
    page of new content."""
    d = _data(host)
    if pages.size == 0:
        return np.zeros(0)
    unmerge(host, d, pages)
    host.pages.set_state(pages, RESIDENT)
    host.pages.content[pages] = unique_content(pages)
    per_vm = np.bincount(host.pages.vm[pages], minlength=host.nvm) * float(host.page_scale)
    host.count_per_vm("cow_breaks", per_vm)
    d.cow_pending += per_vm
    host.set_host_pool(NAME, float(d.stable.pages_shared()))
    return np.full(pages.size, float(host.settings["latency.ksm_cow_break"]))


# --- counters and reports -------------------------------------------------------------------------


def counters(host: Host) -> dict[str, float]:
    """The /sys/kernel/mm/ksm counters, in 4 KiB pages (general_profit in bytes)."""
    d = _data(host)
    if d is None:
        return {}
    s = float(host.page_scale)
    shared = d.stable.pages_shared()
    sharing = d.stable.mappings() - shared
    volatile = d.rmap_items - shared - sharing - d.pages_unshared
    return {
        "run": d.run,
        "pages_to_scan": d.pages_to_scan,
        "sleep_millisecs": d.sleep_ms,
        "full_scans": d.full_scans,
        "pages_shared": shared * s,
        "pages_sharing": sharing * s,
        "pages_unshared": d.pages_unshared * s,
        "pages_volatile": volatile * s,
        "ksm_zero_pages": d.zero_pages * s,
        "pages_scanned": d.scanned,
        "pages_skipped": d.skipped * s,
        "general_profit": ((sharing + d.zero_pages) * 4096.0 - d.rmap_items * RMAP_ITEM_BYTES) * s,
    }


def merged_amounts(host: Host) -> dict[str, np.ndarray]:
    """Per-VM bytes: merged (mapped to a KSM page or the zero page), and saved by it."""
    d = _data(host)
    pg = host.pages
    pb = float(host.page_bytes)
    mp = np.flatnonzero(pg.state == d.code)
    vm = pg.vm[mp]
    ksm = ~d.zero[mp]
    slot = d.stable.find(pg.content[mp[ksm]])
    ref = np.maximum(d.stable.ref[np.maximum(slot, 0)], 1).astype(np.float64)
    frames = d.stable.frames[np.maximum(slot, 0)].astype(np.float64)
    n = host.nvm
    saved = np.bincount(vm[ksm], weights=1.0 - frames / ref, minlength=n) + np.bincount(vm[~ksm], minlength=n)
    return {
        "merged": np.bincount(vm, minlength=n) * pb,
        "merged_saved": saved * pb,
        "merged_zero": np.bincount(vm[~ksm], minlength=n) * pb,
    }


@hookimpl
def memtune_vm_columns(host: Host) -> dict[str, np.ndarray] | None:
    if _data(host) is None:
        return None
    a = merged_amounts(host)
    return {"merged_saved": a["merged_saved"], "merged_zero": a["merged_zero"]}


@hookimpl
def memtune_collect_metrics(host: Host) -> list | None:
    d = _data(host)
    if d is None:
        return None
    c = counters(host)
    c["sleep_seconds"] = c["sleep_millisecs"] / 1000.0
    c["merge_across_nodes"] = float(host.settings["ksm.merge_across_nodes"])
    fams = []
    for name, kind, help_, _labels in METRICS:
        key = name.removeprefix("memtune_ksmd_").removesuffix("_total").removesuffix("_bytes")
        value = float(c[key])
        fam = host_counter if kind == "counter" else host_gauge
        fams.append(fam(name.removesuffix("_total") if kind == "counter" else name, help_, value=value))
    return fams


@hookimpl
def memtune_finish(host: Host, result: dict) -> None:
    d = _data(host)
    if d is None:
        return
    result.setdefault("ksm", {}).update(
        {k: (round(v, 3) if isinstance(v, float) else v) for k, v in counters(host).items()}
    )
    result["ksm"]["first_merge_s"] = d.first_merge
