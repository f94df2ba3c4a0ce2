"""Ballooning: the driver in the guest takes memory the guest values least and hands it back.

In the soft state a VM above its allocation target inflates its balloon: the guest gives up its
free pages, then its coldest ones, paging them out to its virtual disk; the hypervisor releases the
machine pages behind them [Waldspurger OSDI 2002 s.3.2]. Balloons stop growing in the hard and low
states and deflate when the VM is below target or the host is in the high state; a VM over its
limit keeps a balloon of the excess [vSphere Resource Management guide, "Memory Allocation Limit"].
The guest drops clean page cache before it pages out anonymous memory. Rates and caps follow
`Mem.CtlMaxPercent` and Linux vmw_balloon; docs/model.md ("Ballooning") has the rules in full and
the measurements behind them.

Counters (per VM): ``balloon_inflated_bytes``, ``balloon_deflated_bytes``, ``guest_swap_out_bytes``,
``guest_swap_in_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.plugin import (
    FREE,
    RESIDENT,
    Knob,
    MemState,
    MiB,
    Setting,
    first_of_each,
    hookimpl,
    settings_hook,
)

NAME = "balloon"
STATE = "ballooned"
GUEST_SWAPPED = "guest_swapped"

SETTINGS = (
    Setting("Mem.CtlMaxPercent", "percent", 65,
            "Largest balloon, percent of a VM's configured memory (per VM: sched.mem.maxmemctl).",
            "ESXi default Mem.CtlMaxPercent = 65 (vSphere Resource Management guide, Memory Balloon Driver)",
            minimum=0, maximum=65, tunable=True),
    Setting("memtune.balloon_inflate_rate", "bytes", 8 * MiB,
            "Balloon growth per VM per second when the guest must page out to give memory "
            "(sleeping allocations).",
            "Linux vmw_balloon VMW_BALLOON_RATE_ALLOC_MAX = 2048 pages per 1 s cycle", minimum=1),
    Setting("memtune.balloon_inflate_rate_free", "bytes", 64 * MiB,
            "Balloon growth per VM per second while the guest has free memory (non-sleeping allocations).",
            "Linux vmw_balloon VMW_BALLOON_NOSLEEP_ALLOC_MAX = 16384 pages per 1 s cycle", minimum=1),
    Setting("memtune.balloon_deflate_rate", "bytes", 64 * MiB,
            "Balloon shrinkage per VM per second.",
            "Linux vmw_balloon VMW_BALLOON_RATE_FREE_MAX = 16384 pages per 1 s cycle", minimum=1),
    Setting("memtune.balloon_candidates", "int", 4,
            "Random hot-window pages the guest compares per page it gives up once no resident page "
            "outside its hot window is left (the least likely touched of k per page are taken).",
            "model choice: best of 4 random pages approximates the order of the guest's active list",
            minimum=1,
            maximum=64),
    # latency.guest_swap_in is the core's (memtune/core/builtin.py): guests page without a balloon too
)


@dataclass
class BalloonData:
    """Per-host state of the balloon plugin (``host.plugin_data["balloon"]``)."""

    code: int
    guest_swapped: int
    resident_only: np.ndarray     # allowed-state tables for picks: resident pages, ballooned pages
    ballooned_only: np.ndarray
    cap: np.ndarray               # per VM: largest balloon, simulated pages (0 without a driver)
    free_done_at: np.ndarray      # per VM: `allocated` at which no guest-free resident page was left
    carry_in: np.ndarray          # per VM: fractional inflation budget carried to the next tick
    carry_out: np.ndarray         # per VM: fractional deflation budget
    dt: float = 0.0
    cache_taken: np.ndarray | int = 0   # per VM: page-cache pages among the last _coldest pick


def _data(host: Any) -> BalloonData | None:
    return host.plugin_data.get(NAME)


memtune_register_settings = settings_hook(SETTINGS)


@hookimpl
def memtune_register_page_states(register: Any) -> None:
    # held by the balloon: no machine page; a touch makes the guest page out another page instead
    register(STATE, private_frame=False, mapped=False, read_fault=True, write_fault=True,
             fault_allocates=False, fault=fault_ballooned)
    # given back to the guest while its data is still on the guest's virtual disk
    register(GUEST_SWAPPED, private_frame=False, mapped=False, read_fault=True, write_fault=True,
             fault_allocates=True, fault=fault_guest_swapped)


@hookimpl
def memtune_register_knobs(register: Any, scenario: Any) -> None:
    register(Knob("Mem.CtlMaxPercent", kind="int", low=0, high=65,
                  help="largest balloon, percent of configured memory"))
    register(Knob("maxmemctl", target="vm", kind="real", low=0.0, high=0.65,
                  help="sched.mem.maxmemctl as a share of configured memory"))


@hookimpl
def memtune_configure(host: Any) -> None:
    s = host.settings
    code = host.states.code(STATE)
    gs = host.states.code(GUEST_SWAPPED)
    pct = s["Mem.CtlMaxPercent"] / 100.0
    cap_bytes = np.array([v.memory * pct if v.maxmemctl is None else min(v.maxmemctl, v.memory)
                          for v in host.vms], dtype=np.float64)
    cap = np.where(host.balloon_driver, np.floor(cap_bytes / host.page_bytes), 0).astype(np.int64)
    host.plugin_data[NAME] = BalloonData(
        code=code, guest_swapped=gs, resident_only=host.states.table(RESIDENT),
        ballooned_only=host.states.table(code),
        cap=cap, free_done_at=np.full(host.nvm, -1, dtype=np.int64),
        carry_in=np.zeros(host.nvm), carry_out=np.zeros(host.nvm))


@hookimpl
def memtune_tick(host: Any, now: float, dt: float) -> None:
    d = _data(host)
    if d is not None:
        d.dt = dt


def _budget(rate_bytes: float, dt: float, host: Any, carry: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Whole pages each VM in ``mask`` may move this tick at ``rate_bytes``/s (fractions carried)."""
    allow = np.where(mask, rate_bytes * dt / host.page_bytes + carry, 0.0)
    whole = np.floor(allow)
    carry[:] = np.where(mask, np.minimum(allow - whole, 1.0), 0.0)
    return whole.astype(np.int64)


def _coldest(host: Any, d: BalloonData, want: np.ndarray) -> np.ndarray:
    """About ``want[v]`` of VM v's coldest resident guest pages, grouped by VM: pages outside the
    working set's hot window first (all equally cold: at random), then the least likely touched
    hot ones among k random candidates per page."""
    k = int(host.settings["memtune.balloon_candidates"])
    pg = host.pages
    wl = host.workload
    rng = host.rng(NAME)
    alloc = wl.allocated
    hot_end = np.minimum(wl.wss, alloc)          # the hot window: ranks offset .. offset + wss - 1
    if wl.cache.any():
        # page cache first: the coldest end, clean pages the guest drops without writing them out
        lo = np.maximum(hot_end, alloc - wl.cache)
        cache = pg.pick_random(rng, want, d.resident_only, lo=lo, hi=alloc, shift=wl.offset, wrap=alloc)
        got = np.bincount(pg.vm[cache], minlength=host.nvm)
        host.count_per_vm("guest_cache_dropped_bytes", got * float(host.page_bytes))
        d.cache_taken = got
        anon = pg.pick_random(rng, want - got, d.resident_only, lo=hot_end, hi=lo, shift=wl.offset,
                              wrap=alloc)
        cold = np.concatenate([cache, anon])
        cold = cold[pg.vm[cold].argsort(kind="stable")]
    else:
        cold = pg.pick_random(rng, want, d.resident_only, lo=hot_end, hi=alloc, shift=wl.offset, wrap=alloc)
        d.cache_taken = 0
    short = want - np.bincount(pg.vm[cold], minlength=host.nvm)
    if not short.any():
        return cold
    cand = pg.pick_random(rng, short * k, d.resident_only, hi=hot_end, shift=wl.offset, wrap=alloc)
    if cand.size == 0:
        return cold
    # least likely touched first; the stable sort keeps ties (a uniform hot set) in random order
    p = host.touch_probability(cand)
    vm = pg.vm[cand]
    order = (vm + p / (2.0 * max(float(p.max()), 1e-300))).argsort(kind="stable")
    cand, vm = cand[order], vm[order]
    out = np.concatenate([cold, cand[first_of_each(vm, short)]])
    return out[pg.vm[out].argsort(kind="stable")]


def _inflate(host: Any, d: BalloonData, want: np.ndarray) -> np.ndarray:
    """Grow balloons by up to ``want[v]`` pages within the rate limits; pages taken per VM."""
    s = host.settings
    nvm = host.nvm
    pg = host.pages
    rate_free, rate_cold = s["memtune.balloon_inflate_rate_free"], s["memtune.balloon_inflate_rate"]
    active = want > 0
    # budget in "free-page units"; a cold page costs rate_free / rate_cold of them
    budget = _budget(rate_free, d.dt, host, d.carry_in, active)
    alloc = host.workload.allocated
    # the guest gives up its free pages first
    stale = (d.free_done_at >= 0) & (alloc < d.free_done_at)
    d.free_done_at[stale] = -1
    look = active & (d.free_done_at < 0)
    want_free = np.where(look, np.minimum(want, budget), 0)
    free_pages = pg.pick_random(host.rng(NAME), want_free, d.resident_only, lo=alloc)
    got_free = np.bincount(pg.vm[free_pages], minlength=nvm)
    d.free_done_at[look & (got_free < want_free)] = alloc[look & (got_free < want_free)]
    # then its coldest pages, which it pages out to its virtual disk (slower: sleeping allocations)
    ratio = rate_free / rate_cold
    want_cold = np.minimum(want - got_free, np.floor((budget - got_free) / ratio)).astype(np.int64)
    want_cold = np.maximum(want_cold, 0)
    cold = _coldest(host, d, want_cold) if want_cold.any() else np.zeros(0, dtype=np.int64)
    taken = np.concatenate([free_pages, cold])
    pg.set_state(taken, d.code)
    got_cold = np.bincount(pg.vm[cold], minlength=nvm)
    # budget not spent (e.g. nothing to take) is not carried over
    d.carry_in[(got_free + got_cold * ratio) < budget] = 0.0
    got = got_free + got_cold
    host.count_per_vm("balloon_inflated_bytes", got * float(host.page_bytes))
    host.count_per_vm("guest_swap_out_bytes", (got_cold - d.cache_taken) * float(host.page_bytes))
    return got


def _deflate(host: Any, d: BalloonData, amount: np.ndarray) -> np.ndarray:
    """Shrink balloons by ``amount[v]`` pages; what the guest gets back depends on the rank."""
    pg = host.pages
    pages = pg.pick_random(host.rng(NAME), amount, d.ballooned_only)
    if pages.size == 0:
        return np.zeros(host.nvm, dtype=np.int64)
    data = ~host.guest_free(pages)
    pg.set_state(pages[~data], FREE)
    pg.set_state(pages[data], d.guest_swapped)
    got = np.bincount(pg.vm[pages], minlength=host.nvm)
    host.count_per_vm("balloon_deflated_bytes", got * float(host.page_bytes))
    return got


@hookimpl(tryfirst=True)
def memtune_reclaim(host: Any, state: int, need: np.ndarray) -> None:
    """Inflate in the soft state (and at a VM's limit), keep in hard/low; deflate in the high state or
    below target, never below what a VM's limit calls for."""
    d = _data(host)
    if d is None or d.dt <= 0:
        return
    size = host.pages.counts[:, d.code]
    above = need > 0
    # a VM whose guest uses more than its limit keeps a balloon of the excess, in every state
    floor = np.where(
        host.limit < host.vm_pages - 0.5,
        np.minimum(d.cap, np.maximum(host.workload.allocated - np.floor(host.limit), 0)),
        0,
    )
    touched = host.vm_pages - host.pages.counts[:, FREE]  # guest pages ever backed
    # ... but never by taking the VM's machine memory below its reservation
    spare = np.maximum(np.floor(host.held() - host.reservation), 0)
    want = np.where(touched > host.limit, np.minimum(floor - size, spare), 0)
    if state == MemState.SOFT:
        want = np.maximum(want, np.minimum(np.floor(need + 1e-9), d.cap - size))
    want = np.maximum(np.where(host.powered, want, 0), 0).astype(np.int64)
    if want.any():
        got = _inflate(host, d, want)
        need -= got
        np.maximum(need, 0.0, out=need)
        if got.any():
            host.emit(
                "reclaim",
                None,
                technique=NAME,
                bytes={host.vm_names[v]: float(got[v] * host.page_bytes) for v in np.flatnonzero(got)},
            )
    else:
        d.carry_in[:] = 0.0
    size = host.pages.counts[:, d.code]
    if state == MemState.HIGH:
        room = (size - floor).astype(np.float64)
    else:  # only VMs below target (never one just inflated)
        # pages given back with their data on the guest's disk come back at their next touch: they
        # count against the room below target, or deflation overshoots it tick after tick
        pending = host.pages.counts[:, d.guest_swapped]
        room = np.where(
            above | (want > 0), 0.0, np.minimum(size - floor, np.floor(host.targets - host.held()) - pending)
        )
    mask = (room > 0) & (size > 0)
    if not mask.any():
        d.carry_out[:] = 0.0
        return
    allow = _budget(host.settings["memtune.balloon_deflate_rate"], d.dt, host, d.carry_out, mask)
    amount = np.minimum(allow, np.maximum(room, 0)).astype(np.int64)
    if amount.any():
        _deflate(host, d, amount)


def fault_guest_swapped(host: Any, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
    """Guest touches of data it paged out while ballooned, with free memory again: it reads the
    data back from its disk into a new page and evicts nothing."""
    pg = host.pages
    pg.set_state(pages, RESIDENT)
    host.count_per_vm(
        "guest_swap_in_bytes", np.bincount(pg.vm[pages], minlength=host.nvm) * float(host.page_bytes)
    )
    return np.full(pages.size, host.settings["latency.guest_swap_in"])


def fault_ballooned(host: Any, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
    """Guest touches of data behind the balloon: the guest reads it back from its disk and, so
    the balloon keeps its size, pages out another cold page of its own for each."""
    d = _data(host)
    pg = host.pages
    nvm = host.nvm
    latency = np.full(pages.size, host.settings["latency.guest_swap_in"])
    vm = pg.vm[pages]
    want = np.bincount(vm, minlength=nvm)
    victims = _coldest(host, d, want)  # the touched pages are not resident yet: never picked
    got = np.bincount(pg.vm[victims], minlength=nvm)
    # a VM with too few resident pages to evict keeps the rest of its touched pages ballooned
    if (got < want).any():
        order = vm.argsort(kind="stable")
        pages = pages[order[first_of_each(vm[order], got)]]
    pg.set_state(pages, RESIDENT)
    pg.set_state(victims, d.code)
    host.count_per_vm("guest_swap_in_bytes", want * float(host.page_bytes))
    host.count_per_vm("guest_swap_out_bytes", (got - d.cache_taken) * float(host.page_bytes))
    return latency


@hookimpl
def memtune_vm_columns(host: Any) -> dict[str, np.ndarray] | None:
    d = _data(host)
    if d is None:
        return None
    return {"balloon_max": d.cap * float(host.page_bytes)}
