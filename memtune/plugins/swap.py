"""Hypervisor swap: the last resort of the hard and low memory states.

The hypervisor cannot see which guest pages are cold, so ESX picks swap victims at random among the
resident pages of VMs above their allocation target [Waldspurger OSDI 2002 s.3; vSphere Resource
Management guide, "Swapping"]. Victims are offered to every page-out tier in priority order
(``host.page_out``), so memory compression (priority 10) keeps the pages it can; this plugin is the
priority-90 tier that takes whatever is left, and it also receives the pages the compression cache
evicts and the pages the core pages out for VMs at their limit.

Where a swapped page lives:

- the host swap cache ("Host Cache Configuration": part of a local SSD datastore given to swapping,
  ``memtune.swap_host_cache`` bytes, host-wide, off by default) takes swapped pages first, first
  come first served, while it has room; a touch is served at ``latency.swap_in_host_cache``;
- the rest go to the VM's ``.vswp`` file on its datastore (``memtune.swap_datastore``: ``ssd`` or
  ``hdd``), served at ``latency.swap_in_ssd`` / ``latency.swap_in_hdd``.

ESX does not migrate pages between the host cache and the ``.vswp`` later, so neither does this
model. A touch of a swapped page is a fault that needs a free machine page (``fault_allocates``):
in the low state, or with no free memory, the core refuses it and the VM stalls.

Counters (per VM, in reports): ``swap_out_pages`` / ``swap_out_bytes``, ``swap_in_pages`` /
``swap_in_bytes`` (pages of 4 KiB), ``swap_in_host_cache_pages``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.plugin import RESIDENT, GiB, Knob, MemState, Setting, hookimpl, page_out_hook, settings_hook

NAME = "swap"
STATE = "swapped"
PRIORITY = 90
ROUNDS = 6          # reclaim rounds per tick: compression saves only part of a page per victim

SETTINGS = (
    Setting("memtune.swap_datastore", "str", "ssd",
            "Device class of the datastore holding the VMs' .vswp files (sched.swap.dir): ssd or hdd.",
            "model choice: all-flash datastores are the common case; vSphere Resource Management "
            "guide, 'Swap File Location'", choices=("ssd", "hdd")),
    Setting("memtune.swap_host_cache", "bytes", 0,
            "Host swap cache size (vSphere 'Host Cache Configuration' on a local SSD), host-wide; "
            "swapped pages go there first while it has room.",
            "vSphere default: no host cache configured (esxcli sched swap system set "
            "--hostcache-enabled)", minimum=0, tunable=True),
    Setting("latency.swap_in_host_cache", "seconds", 50e-6,
            "Swap-in of a page held in the host swap cache (local NVMe/SSD 4 KiB random read + fault).",
            "NVMe SSD 4 KiB random read ~50 us (fio --rw=randread --bs=4k --direct=1; memtune calibrate)"),
    Setting("latency.swap_in_ssd", "seconds", 150e-6,
            "Swap-in of a page from a .vswp on an SSD datastore (4 KiB random read over the storage "
            "stack + fault).",
            "SSD datastore 4 KiB random read through the storage stack ~150 us (docs/model.md)"),
    Setting("latency.swap_in_hdd", "seconds", 8e-3,
            "Swap-in of a page from a .vswp on a spinning-disk datastore (one seek + rotation).",
            "one seek + half a rotation ~8 ms (Ruemmler & Wilkes, IEEE Computer 1994)"),
)


@dataclass
class SwapData:
    """Per-host state of the swap plugin (``host.plugin_data["swap"]``)."""

    code: int
    resident_only: np.ndarray      # allowed-state table for victim picks
    in_cache: np.ndarray           # per page: a swapped page held in the host swap cache
    cache_pages: np.ndarray        # per VM: simulated pages in the host swap cache
    cache_capacity: int            # host swap cache size, simulated pages
    cache_latency: float
    datastore_latency: float


def _data(host: Any) -> SwapData | None:
    return host.plugin_data.get(NAME)


memtune_register_settings = settings_hook(SETTINGS)


@hookimpl
def memtune_register_page_states(register: Any) -> None:
    # no machine page behind it; a touch (read or write) needs a free page to swap into
    register(STATE, private_frame=False, mapped=False, read_fault=True, write_fault=True,
             fault_allocates=True, fault=swap_in)


@hookimpl
def memtune_register_knobs(register: Any, scenario: Any) -> None:
    register(Knob("memtune.swap_host_cache", kind="int", low=0,
                  high=max(int(scenario.host.memory // 4), GiB),
                  help="host swap cache (SSD) size in bytes, up to a quarter of host memory"))


@hookimpl
def memtune_configure(host: Any) -> None:
    s = host.settings
    code = host.states.code(STATE)
    device = s["memtune.swap_datastore"]
    host.plugin_data[NAME] = SwapData(
        code=code,
        resident_only=host.states.table(RESIDENT),
        in_cache=np.zeros(host.pages.total, dtype=bool),
        cache_pages=np.zeros(host.nvm, dtype=np.int64),
        cache_capacity=int(s["memtune.swap_host_cache"] // host.page_bytes),
        cache_latency=float(s["latency.swap_in_host_cache"]),
        datastore_latency=float(s["latency.swap_in_ssd"] if device == "ssd" else s["latency.swap_in_hdd"]),
    )


def take_pages(host: Any, pages: np.ndarray) -> np.ndarray:
    """Page-out tier: swap every offered page (host cache first while it has room)."""
    d = _data(host)
    if pages.size == 0:
        return np.zeros(0, dtype=bool)
    pg = host.pages
    pg.set_state(pages, d.code)
    room = max(d.cache_capacity - int(d.cache_pages.sum()), 0)
    cached = pages[:room]
    d.in_cache[cached] = True
    d.cache_pages += np.bincount(pg.vm[cached], minlength=host.nvm)
    per_vm = np.bincount(pg.vm[pages], minlength=host.nvm).astype(np.float64)
    host.count_per_vm("swap_out_pages", per_vm * pg.scale)
    host.count_per_vm("swap_out_bytes", per_vm * host.page_bytes)
    return np.ones(pages.size, dtype=bool)


memtune_register_page_out = page_out_hook(NAME, PRIORITY, take_pages)


@hookimpl(trylast=True)
def memtune_reclaim(host: Any, state: int, need: np.ndarray) -> None:
    """In the hard and low states, page out random resident pages of VMs above target."""
    if state < MemState.HARD:
        return
    d = _data(host)
    rng = host.rng(NAME)
    before_all = host.held()
    # where a VM holds pooled memory (compressed pages), a page-out can free up to half a page more
    # than its victims (the compression tier evicting an older compressed page to make room): stay
    # half a page short of the need there, so reclamation never takes a VM below its reservation
    margin = np.where(sum(host.vm_pools.values(), np.zeros(host.nvm)) > 0, 0.5, 0.0)
    for _ in range(ROUNDS):
        left = need - margin
        want = np.where(host.powered & (left >= 1.0), np.floor(left + 1e-9), 0).astype(np.int64)
        if not (want > 0).any():
            break
        victims = host.pick_victims(rng, np.maximum(want, 0), d.resident_only)
        if victims.size == 0:
            break
        before = host.held()
        host.page_out(victims)
        need -= before - host.held()
        np.maximum(need, 0.0, out=need)
    freed = (before_all - host.held()) * host.page_bytes
    if (freed > 0).any():
        host.emit("reclaim", None, technique=NAME,
                  bytes={host.vm_names[v]: float(freed[v]) for v in np.flatnonzero(freed > 0)})


def swap_in(host: Any, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
    """Fault handler of ``swapped``: swap touched pages back in, at the host-cache latency for
    cached ones and the datastore latency for the rest."""
    d = _data(host)
    pg = host.pages
    cached = d.in_cache[pages]
    latency = np.where(cached, d.cache_latency, d.datastore_latency)
    vm = pg.vm[pages]
    if cached.any():
        d.in_cache[pages[cached]] = False
        hits = np.bincount(vm[cached], minlength=host.nvm)
        d.cache_pages -= hits
        host.count_per_vm("swap_in_host_cache_pages", hits.astype(np.float64) * pg.scale)
    pg.set_state(pages, RESIDENT)
    per_vm = np.bincount(vm, minlength=host.nvm).astype(np.float64)
    host.count_per_vm("swap_in_pages", per_vm * pg.scale)
    host.count_per_vm("swap_in_bytes", per_vm * host.page_bytes)
    return latency


@hookimpl
def memtune_vm_columns(host: Any) -> dict[str, np.ndarray] | None:
    d = _data(host)
    if d is None:
        return None
    return {"swap_host_cache": d.cache_pages * float(host.page_bytes)}
