"""The host: VMs, their pages, free memory, the memory state, and the accounting plugins use.

A :class:`Host` is built from a :class:`~memtune.core.scenario.Scenario` and a plugin manager. It
holds every piece of run state (no globals), so many hosts can run in one process. Plugins keep
their own state in ``host.plugin_data[name]`` and draw random numbers from ``host.rng(name)``, a
stream of its own derived from the scenario seed, so adding a plugin never shifts another's draws.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from memtune.core.content_groups import memberships
from memtune.core.contents import duplicate_content, group_content, template_content, unique_content
from memtune.core.latency import LatencyBook
from memtune.core.memstate import MemState, min_free
from memtune.core.page_budget import check_fits
from memtune.core.pages import FREE, RESIDENT, PageTable
from memtune.core.plugins import MemtunePluginManager
from memtune.core.registry import registry_of
from memtune.core.sampling import WorkingSetSampler
from memtune.core.scenario import Scenario
from memtune.core.workload import WorkloadState
from memtune.errors import AdmissionError, PluginError

PAGE_4K = 4096
AUTO_PAGE_BUDGET = 1 << 21     # simulated pages a host gets when page_scale is "auto"


def auto_page_scale(total_bytes: int) -> int:
    """Smallest power of two keeping the host's simulated pages within the budget."""
    scale = 1
    while total_bytes / (PAGE_4K * scale) > AUTO_PAGE_BUDGET:
        scale *= 2
    return scale


def page_scale_of(scenario: Scenario) -> int:
    """4 KiB pages per simulated page: the scenario's ``page_scale``, else the automatic one."""
    return scenario.host.page_scale or auto_page_scale(sum(v.memory for v in scenario.vms))


def admission_control(memory: float, needs: np.ndarray | list[float],
                      min_free_pct: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """vSphere admission control: VMs power on in order while their reservation + overhead
    (``needs``, bytes) fits the host's unreserved memory (``memory`` minus minFree); a refused VM
    reserves nothing. Returns the admitted mask and the unreserved bytes each VM found."""
    capacity = memory - min_free(memory, min_free_pct)
    admitted = np.ones(len(needs), dtype=bool)
    left = np.empty(len(needs))
    reserved = 0.0
    for i, need in enumerate(needs):
        left[i] = capacity - reserved
        if reserved + need > capacity:
            admitted[i] = False
            continue
        reserved += need
    return admitted, left


class Host:
    """One simulated hypervisor host and everything running on it."""

    def __init__(self, scenario: Scenario, pm: MemtunePluginManager, *, seed: int | None = None,
                 admission: str = "strict") -> None:
        self.scenario = scenario
        self.pm = pm
        self.hook = pm.hook
        self.seed = scenario.seed if seed is None else int(seed)
        self.registry = registry_of(pm)
        self.settings: dict[str, Any] = self.registry.settings.resolve(scenario.settings,
                                                                       source=scenario.source)
        self.plugin_data: dict[str, Any] = {}
        self.vms = list(scenario.vms)
        self.nvm = len(self.vms)
        self.memory = scenario.host.memory
        self.page_scale = page_scale_of(scenario)
        self.page_bytes = PAGE_4K * self.page_scale
        check_fits(sum(max(1, -(-v.memory // self.page_bytes)) for v in self.vms), self.page_scale,
                   scenario.source)
        self.min_free = min_free(self.memory, self.settings["Mem.MemMinFreePct"])

        self.states = self.registry.states         # page states and page-out tiers of the plugins
        self.tiers = self.registry.tiers
        self._configure_vms()
        self._start_run_state()
        self.powered = self._admission(admission)
        self._fill_content()
        if self.settings["memtune.warm_start"]:
            self._warm_start()

    def _configure_vms(self) -> None:
        """Per-VM configuration as arrays: pages, reservation and limit (pages), shares, overhead,
        balloon driver, encryption, large pages (``Mem.AllocGuestLargePage``), guest image."""
        pb = self.page_bytes
        vm = self.vms
        self.vm_names = [v.name for v in vm]
        self.vm_pages = np.array([max(1, -(-v.memory // pb)) for v in vm], dtype=np.int64)
        self.reservation = np.array([v.reservation / pb for v in vm])
        self.limit = np.array([v.effective_limit / pb for v in vm])
        self.shares = np.array([v.shares_number for v in vm], dtype=np.float64)
        self.overhead = np.array([v.overhead for v in vm], dtype=np.float64)
        self.balloon_driver = np.array([v.balloon_driver for v in vm], dtype=bool)
        self.encrypted = np.array([v.encrypted for v in vm], dtype=bool)
        self.large_pages = np.array([v.large_pages for v in vm], dtype=bool) & bool(
            self.settings["Mem.AllocGuestLargePage"])
        self.large_pages_broken = False
        images = sorted({v.image for v in vm if v.image})
        self.image_index = np.array([images.index(v.image) if v.image else len(images) + i
                                     for i, v in enumerate(vm)], dtype=np.int64)

    def _start_run_state(self) -> None:
        """The run's state at time 0: page table, workloads, sampler, latency book, pools, memory
        state high, targets at each VM's size, no counters."""
        vm = self.vms
        self.pages = PageTable(self.vm_pages, self.states, self.page_scale)
        self.workload = WorkloadState([v.workload for v in vm], self.vm_pages,
                                      np.array([v.start for v in vm]),
                                      kernel_share=float(self.settings["memtune.guest_kernel_share"]))
        self.sampler = WorkingSetSampler(
            self.nvm, pages_per_sample=int(self.settings["Mem.SampleSize"]),
            alpha_fast=self.settings["memtune.sample_alpha_fast"],
            alpha_slow=self.settings["memtune.sample_alpha_slow"])
        self.book = LatencyBook(self.nvm)
        self.vm_pools: dict[str, np.ndarray] = {}
        self.host_pools: dict[str, float] = {}
        self.state = MemState.HIGH
        self.time_in_state = np.zeros(len(MemState))
        self.states_visited: list[str] = []
        self.now = 0.0
        self.ticks = 0
        self.targets = self.vm_pages.astype(np.float64)
        self.blocked = np.zeros(self.nvm, dtype=bool)
        self.counters: dict[str, np.ndarray] = {}
        self._streams: dict[str, np.random.Generator] = {}
        self._private_mask = self.states.flag_table("private_frame").astype(np.int64)
        # mapped copies of a shared page (KSM, TPS): on a Linux host's LRU like any anonymous page
        self._lru_shared = self.states.flag_table("mapped") & ~self.states.flag_table("private_frame")

    # --- randomness ----------------------------------------------------------------------------

    def rng(self, name: str) -> np.random.Generator:
        """A random stream of its own for ``name``, derived from the seed (stable across runs)."""
        gen = self._streams.get(name)
        if gen is None:
            ss = np.random.SeedSequence(entropy=self.seed, spawn_key=(zlib.crc32(name.encode()),))
            gen = self._streams[name] = np.random.Generator(np.random.PCG64(ss))
        return gen

    # --- admission control and initial content ------------------------------------------------

    def _admission(self, mode: str) -> np.ndarray:
        """Power on VMs in order while reservation + overhead fits unreserved memory."""
        needs = np.array([v.reservation for v in self.vms], dtype=np.float64) + self.overhead
        powered, left = admission_control(self.memory, needs, self.settings["Mem.MemMinFreePct"])
        for i in np.flatnonzero(~powered):
            v = self.vms[i]
            msg = (f"admission control: VM {v.name!r} needs {needs[i] / 2**20:.0f} MiB reserved "
                   f"(reservation + overhead) but only {left[i] / 2**20:.0f} "
                   f"MiB of the host is unreserved")
            if mode == "strict":
                raise AdmissionError(msg, source=self.scenario.source, field=f"vm.{v.name}.reservation")
            self.emit("admission-refused", int(i), reason=msg, reservation=v.reservation)
        self.overhead_bytes = float(self.overhead[powered].sum())
        return powered

    def _fill_content(self) -> None:
        rng = self.rng("content")
        pg = self.pages
        groups = self.scenario.content_groups
        held = memberships(groups, self.vm_names, self.rng("content-groups"), self.scenario.source) \
            if groups else None
        for v, spec in enumerate(self.vms):
            n = int(self.vm_pages[v])
            base = int(pg.base[v])
            wl = spec.workload
            gpages = np.floor(np.array([g.share for g in groups]) * n).astype(np.int64) * held[v] \
                if groups else np.zeros(0, dtype=np.int64)
            rest = n - int(gpages.sum())
            counts = np.floor(np.array(wl.content) * rest).astype(np.int64)
            counts[3] = rest - counts[:3].sum()
            # kinds 0-3: the workload's mix; 4 + g: content group g
            kinds = np.repeat(np.arange(4 + gpages.size), np.concatenate([counts, gpages]))
            rng.shuffle(kinds)
            content = np.empty(n, dtype=np.int64)
            for g in np.flatnonzero(gpages):
                gmask = kinds == 4 + g
                content[gmask] = group_content(int(g), np.arange(int(gpages[g])))
            zero = kinds == 0
            content[zero] = 0
            tmask = kinds == 1
            content[tmask] = template_content(int(self.image_index[v]), np.arange(int(tmask.sum())))
            dmask = kinds == 2
            content[dmask] = duplicate_content(v, np.arange(int(dmask.sum())) // wl.duplicate_copies)
            umask = kinds == 3
            content[umask] = unique_content(base + np.flatnonzero(umask))
            if wl.kind == "boot-storm":
                # the guest zeroed all of its memory at boot; what it does not keep stays zero
                keep = int(np.floor(wl.allocated * n))
                content[keep:] = 0
            pg.content[base:base + n] = content
            zc = rng.choice(4, size=n, p=np.array(wl.compressibility) / sum(wl.compressibility))
            zc[content == 0] = 0
            pg.zclass[base:base + n] = zc

    def _warm_start(self) -> None:
        """Make each running VM's hottest allocated pages resident, up to its initial target."""
        from memtune.core.allocation import allocation_targets

        wl = self.workload
        wl.advance(0.0)
        warm = self.powered & wl.on & np.array([v.workload.kind != "boot-storm" for v in self.vms])
        available = (self.memory - self.overhead_bytes - self.min_free) / self.page_bytes
        cap = np.where(warm, np.minimum(np.minimum(self.limit, self.vm_pages),
                                        np.maximum(wl.allocated, self.reservation)), 0.0)
        floor = np.where(warm, np.minimum(self.reservation, cap), 0.0)
        target = allocation_targets(max(available, 0.0), self.shares, self.sampler.estimate,
                                    self.settings["Mem.IdleTax"] / 100.0, floor, cap)
        chosen = []
        for v in np.flatnonzero(warm):
            k = int(np.floor(min(target[v], wl.allocated[v])))
            if k <= 0:
                continue
            ranks = np.arange(int(self.vm_pages[v]))
            p = wl.probability(np.full(ranks.size, v), ranks)
            top = np.argsort(-p, kind="stable")[:k]
            chosen.append(self.pages.base[v] + top)
        if chosen:
            pages = np.concatenate(chosen)
            self.pages.set_state(pages, RESIDENT)
            self.pages.last_touch[pages] = 0.0

    # --- accounting ----------------------------------------------------------------------------

    def set_vm_pool(self, owner: str, pages: np.ndarray) -> None:
        """Machine memory (in simulated pages, may be fractional) a plugin holds for each VM."""
        self.vm_pools[owner] = np.asarray(pages, dtype=np.float64)

    def set_host_pool(self, owner: str, pages: float) -> None:
        """Machine memory (in simulated pages) a plugin holds for the host as a whole."""
        self.host_pools[owner] = float(pages)

    def private_frame_counts(self) -> np.ndarray:
        """Pages per VM in states that hold a private machine page."""
        return self.pages.counts.dot(self._private_mask)     # 3x faster than a fancy index and sum

    def held(self) -> np.ndarray:
        """Machine memory each VM holds, in pages: private frames plus per-VM plugin pools."""
        held = self.private_frame_counts().astype(np.float64)
        for pool in self.vm_pools.values():
            held += pool
        return held

    def used_bytes(self) -> float:
        pages = self.held().sum() + sum(self.host_pools.values())
        return pages * self.page_bytes + self.overhead_bytes

    def free_bytes(self) -> float:
        return self.memory - self.used_bytes()

    def free_pages(self) -> int:
        return int(self.free_bytes() // self.page_bytes)

    def count(self, name: str, vm: np.ndarray, amount: np.ndarray | float = 1.0) -> None:
        """Add to a per-VM counter (``swap_in_pages``, ``cow_breaks`` ...); shown in reports."""
        arr = self.counters.get(name)
        if arr is None:
            arr = self.counters[name] = np.zeros(self.nvm)
        np.add.at(arr, vm, amount)

    def count_per_vm(self, name: str, per_vm: np.ndarray) -> None:
        arr = self.counters.get(name)
        if arr is None:
            arr = self.counters[name] = np.zeros(self.nvm)
        arr += per_vm

    # --- services for plugins --------------------------------------------------------------------

    def emit(self, kind: str, vm: int | None = None, **data: Any) -> None:
        """Announce an event to every plugin (``memtune_event``)."""
        self.hook.memtune_event(host=self, kind=kind, vm=vm, data=data)

    def page_out(self, pages: np.ndarray, *, above: int | None = None) -> np.ndarray:
        """Offer victim pages to the page-out tiers in priority order; mask of pages taken.

        With ``above``, only tiers of a higher priority are asked (a tier evicting its own pages).
        """
        taken = np.zeros(pages.size, dtype=bool)
        for tier in self.tiers:
            if above is not None and tier.priority <= above:
                continue
            left = (~taken).nonzero()[0]
            if left.size == 0:
                break
            got = np.asarray(tier.func(host=self, pages=pages[left]), dtype=bool)
            taken[left[got]] = True
        return taken

    def serve_fault(self, state: int, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
        """Seconds each of ``pages`` (unique, all in ``state``) waits while the state's owner brings
        it back: the fault handler the state registered, else the ``memtune_page_fault`` hook."""
        info = self.states[state]
        if info.fault is not None:
            lat = info.fault(host=self, pages=pages, write=write)
        else:
            lat = self.hook.memtune_page_fault(host=self, state=state, pages=pages, write=write)
        if lat is None:
            raise PluginError(info.owner, "memtune_page_fault",
                              RuntimeError(f"no plugin serves faults on {info.name!r} pages"))
        return np.broadcast_to(np.asarray(lat, dtype=np.float64), pages.shape).copy()

    def vm_slice(self, v: int) -> slice:
        b = int(self.pages.base[v])
        return slice(b, b + int(self.vm_pages[v]))

    def rank_of(self, pages: np.ndarray) -> np.ndarray:
        return pages - self.pages.base[self.pages.vm[pages]]

    def touch_probability(self, pages: np.ndarray) -> np.ndarray:
        """Probability that one guest touch lands on each page (0: the guest does not use it)."""
        vm = self.pages.vm[pages]
        return self.workload.probability(vm, pages - self.pages.base[vm])

    def pick_victims(self, rng: np.random.Generator, want: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Up to ``want[v]`` pages the hypervisor pages out of each VM, grouped by VM. ESX picks at
        random (it cannot see the guest's LRU; Waldspurger 2002 s.4.3). With ``memtune.host_victims
        = "cold"`` (a Linux host reclaiming a VM process by its LRU lists, mm/vmscan.c): guest-free
        pages first, then pages outside the working set's hot window, then any, each at random; and
        where resident pages are allowed, mapped copies of a shared page too (a KSM page is an
        anonymous page on the LRU, unmapped from every process and swapped like one)."""
        pg = self.pages
        if self.settings.get("memtune.host_victims", "random") != "cold":
            return pg.pick_random(rng, want, allowed)
        if allowed[RESIDENT]:
            allowed = allowed | self._lru_shared
        wl = self.workload
        alloc = wl.allocated
        hot_end = np.minimum(wl.wss, alloc)
        parts = [pg.pick_random(rng, want, allowed, lo=alloc)]
        for lo, hi in ((hot_end, alloc), (None, None)):
            short = want - np.bincount(pg.vm[np.concatenate(parts)], minlength=self.nvm)
            if not (short > 0).any():
                break
            window = {"lo": lo, "hi": hi, "shift": wl.offset, "wrap": alloc} if lo is not None else {}
            more = pg.pick_random(rng, np.maximum(short, 0), allowed, **window)
            parts.append(more[~np.isin(more, np.concatenate(parts))])
        out = np.concatenate(parts)
        return out[pg.vm[out].argsort(kind="stable")]

    def guest_free(self, pages: np.ndarray) -> np.ndarray:
        """Pages the guest is not using (beyond its allocated memory)."""
        vm = self.pages.vm[pages]
        return (pages - self.pages.base[vm]) >= self.workload.allocated[vm]

    @property
    def free_ratio(self) -> float:
        return self.free_bytes() / self.min_free

    def resident_state(self) -> int:
        return RESIDENT

    def free_state(self) -> int:
        return FREE
