"""The simulation tick: touches, faults, background work, allocation, memory state, reclamation.

Cost per tick follows activity: a bounded number of touch draws per VM (each standing for
``touch_rate * dt / draws`` real touches), the pages that fault, and the pages plugins move. Nothing
here walks all pages.

Fault counting. A draw that lands on a non-resident page ``p`` (per-touch probability ``pi``) stands
for the real faults on that page this tick. With ``lam`` real touches in the tick and ``n`` draws, the
importance-sampling estimate of 4 KiB faults is ``scale * (1 - exp(-lam * pi / scale)) / (n * pi)``:
about the draw's weight ``lam / n`` for a cold page, and about one fault per 4 KiB page for a hot one
(it faults once, then stays resident). This keeps latency unbiased however coarse the sampling.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from memtune.core.allocation import allocation_targets
from memtune.core.host import Host
from memtune.core.latency import LatencyBook
from memtune.core.memstate import ENTRY_THRESHOLDS, LARGE_PAGE_BREAK, MemState, next_state
from memtune.core.pages import FREE, RESIDENT, unique_content
from memtune.core.report import Timeline, build_result

# A round of touch draws counts each 4 KiB page once, so a span of k ticks drawn as one round loses
# the refaults per-tick rounds would have counted: about (k - 1) * (1 - s) * tick / round of a VM's
# faults, where s is its faults per touch of an unmapped page in the last round. Longer spans only
# while that stays below 2 % for every VM (a VM thrashing against its limit stays per tick).
REPEAT_LOSS = 0.02


def rank_runs(base: np.ndarray, first: np.ndarray, span: np.ndarray,
              alloc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pages of runs of ranks: ``span[i]`` ranks from ``first[i]`` on (``first < 2 * alloc``, ``span <
    alloc``), wrapping inside the ``alloc[i]`` allocated ranks of the VM whose pages start at
    ``base[i]``; and where each run starts in the result."""
    first = np.where(first >= alloc, first - alloc, first)
    start = span.cumsum() - span
    pages = (base + first - start).repeat(span) + np.arange(int(span.sum()))
    wrap = (first + span > alloc).nonzero()[0]
    if wrap.size:
        inside = alloc[wrap] - first[wrap]                 # pages before the wrap
        n = span[wrap] - inside
        at = (start[wrap] + inside - (n.cumsum() - n)).repeat(n) + np.arange(int(n.sum()))
        pages[at] -= alloc[wrap].repeat(n)
    return pages, start


class Engine:
    """Runs a :class:`Host` tick by tick."""

    def __init__(self, host: Host) -> None:
        self.host = host
        h = host
        st = h.states                       # lookup tables over state codes, from the registry
        self.read_fault = st.flag_table("read_fault")
        self.write_fault = st.flag_table("write_fault")
        self.allocates = st.flag_table("fault_allocates")
        self.private = st.flag_table("private_frame")
        self.faults_on = np.stack([self.read_fault, self.write_fault])   # by access: read, write
        self._faults_on_flat = self.faults_on.reshape(-1)                  # index access * MAX_STATES + state
        self.resident_only = st.table(RESIDENT)
        self.timeline = Timeline(h)
        self._next_report = 0.0
        self._warm = h.scenario.warmup <= 0
        self._touched_until = 0.0           # touch draws made so far stand for the time up to here
        self._free_seen: deque[tuple[float, float]] = deque(maxlen=4)   # (time, free memory) at the last rounds
        self._stop = np.inf                 # end of the run, where one is under way
        # per simulated second of the last round, the largest share of a VM's touches of unmapped
        # pages that repeated one already faulted in that round
        self._repeat_rate = 0.0
        h.hook.memtune_configure(host=h)
        self._policy_event()

    def _policy_event(self) -> None:
        h = self.host
        h.emit("policy", None, settings={k: v for k, v in h.settings.items()},
               vms={v.name: {"reservation": v.reservation, "limit": v.limit, "shares": v.shares,
                             "maxmemctl": v.maxmemctl, "salt": v.salt} for v in h.vms})

    # --- one tick ------------------------------------------------------------------------------

    def step(self, dt: float) -> None:
        h = self.host
        now = h.now + dt
        wl = h.workload
        wl.advance(h.now)
        on = wl.on & h.powered
        if h.now >= self._touched_until - 1e-9 * dt:
            self._free_seen.append((h.now, h.free_bytes()))
            span = self._touch_span(dt)
            self._touched_until = h.now + span
            lam = np.where(on, wl.rate * span, 0.0)
            per_round = max(1, int(round(h.settings["memtune.touch_samples"] * span)))
            draws = np.where(lam > 0, np.minimum(np.ceil(lam), per_round), 0).astype(np.int64)
            self._touch(now, span, lam, draws, on)
            h.sampler.observe_touches(lam)
        h.hook.memtune_tick(host=h, now=now, dt=dt)
        period = h.settings["Mem.SamplePeriod"]
        if np.floor(now / period) > np.floor(h.now / period):
            h.sampler.close_period(h.rng("sampling"), wl.probability, h.vm_pages, on, h.pages.scale)
        self._allocate(on)
        self._update_state(dt)
        # whole pages, so that reclaiming all of it never crosses a fractional target (reservation)
        need = np.floor(np.maximum(h.held() - h.targets, 0.0) + 1e-9)
        h.hook.memtune_reclaim(host=h, state=int(h.state), need=need)
        h.book.running += np.where(on, dt, 0.0)
        h.now = now
        h.ticks += 1
        if not self._warm and now >= h.scenario.warmup:
            self._warm = True
            h.book = LatencyBook(h.nvm)
            h.time_in_state[:] = 0
            h.counters.clear()
        if now >= self._next_report:
            self.timeline.record()
            self._next_report = now + h.scenario.report_interval

    def _touch_span(self, dt: float) -> float:
        """Simulated time the next round of touch draws stands for: ``memtune.touch_interval`` in
        whole ticks, cut short where the next sampling period, the end of the warm-up or the end of
        the run comes first, while the workloads are steady, free memory falling at 1.5 times its
        fastest rate over the last rounds stays above the hard threshold, and no VM lost more than
        REPEAT_LOSS of its faults to repeats in the last round; else one tick."""
        h = self.host
        k = int(h.settings["memtune.touch_interval"] / dt + 1e-9)
        seen = self._free_seen
        if k <= 1 or h.state >= MemState.HARD or len(seen) < 2:
            return dt
        times, free = zip(*seen, strict=True)
        fall = max(0.0, *(-np.diff(free) / np.maximum(np.diff(times), 1e-9)))
        low = (ENTRY_THRESHOLDS[MemState.SOFT] + h.settings["memtune.state_hysteresis"]) * h.min_free
        if free[-1] - 1.5 * k * dt * fall < low or (k - 1) * dt * self._repeat_rate > REPEAT_LOSS:
            return dt
        t0 = h.now
        period = h.settings["Mem.SamplePeriod"]
        ends = [(np.floor(t0 / period + 1e-9) + 1) * period, self._stop]
        if t0 < h.scenario.warmup:
            ends.append(h.scenario.warmup)
        k = int(min(k, *((end - t0) / dt + 1e-9 for end in ends)))
        if k <= 1 or not h.workload.steady(t0, t0 + k * dt):
            return dt
        return k * dt

    def _touch(self, now: float, dt: float, lam: np.ndarray, draws: np.ndarray, on: np.ndarray) -> None:
        h = self.host
        pg = h.pages
        wl = h.workload
        rng = h.rng("touch")
        vm, rank = wl.draw(rng, draws)
        if vm.size == 0:
            return
        page = pg.base[vm] + rank
        write = rng.random(vm.size) < wl.writes[vm]
        st = pg.state[page]
        rf = self.read_fault.take(st)
        faulting = rf | (write & self.write_fault.take(st))
        weight = lam[vm] / draws[vm]
        faults = np.zeros(vm.size)
        latency = np.zeros(vm.size)
        served = np.ones(vm.size, dtype=bool)
        # per-touch probability of each drawn page, where fault or write counting needs it
        pi_all = np.zeros(vm.size)
        need = (faulting | write).nonzero()[0]
        pi_all[need] = wl.probability(vm[need], rank[need])
        fi = faulting.nonzero()[0]
        if fi.size:
            vf = vm[fi]
            pi = pi_all[fi]
            sel = np.maximum(pi * np.where(rf[fi], 1.0, wl.writes[vf]), 1e-300)
            scale = pg.scale
            nd = draws[vf]
            faults[fi] = np.minimum(scale * -np.expm1(-lam[vf] * sel / scale) / (nd * sel), weight[fi])
            # simulated pages this draw's 4 KiB faults amount to; the drawn page is one of them
            pages_in = faults[fi] / scale
            extra = np.floor(pages_in + rng.random(fi.size)).astype(np.int64) - 1
            extra = np.maximum(extra, 0)
            extra[~pg.first_seen(page[fi])] += 1     # a page drawn twice comes in once: one more companion
            # no companions where allocations would be refused anyway
            refuse = self.allocates[st[fi]] & (h.blocked[vf] | (h.free_pages() <= 0))
            extra[refuse] = 0
            # companions: the pages near the draw the same access faults on (a read: states that
            # fault on reads; a write to a shared page: states that fault on writes)
            cpage, src = self._companions(page[fi], rank[fi], (~rf[fi]).astype(np.intp), extra)
            # companions of a write fault (COW) are written too; of a read fault, only read
            cwrite = (write[fi] & ~rf[fi])[src]
            lat_f, ok_f = self._serve_faults(np.concatenate([page[fi], cpage]),
                                             np.concatenate([write[fi], cwrite]))
            latency[fi] = lat_f[: fi.size]
            served[fi] = ok_f[: fi.size]
        # touches that found their page mapped (or had it brought back)
        pg.last_touch[page[served]] = now
        self._write(page, rank, vm, pi_all, write & served, lam, draws, rng)
        # latency accounting
        overhead = np.zeros(h.nvm)
        for extra in h.hook.memtune_access_overhead(host=h):
            if extra is not None:
                overhead += np.asarray(extra, dtype=np.float64)
        book = h.book
        nvm = h.nvm
        self._repeat_rate = 0.0
        if fi.size:
            vf, ff, sf = vm[fi], faults[fi], st[fi]
            unmapped = np.bincount(vf, weights=weight[fi], minlength=nvm)
            brought = np.bincount(vf, weights=ff, minlength=nvm)
            hit = unmapped > 0
            self._repeat_rate = float((1.0 - brought[hit] / unmapped[hit]).max()) / dt
            book.add(vf, latency[fi] + overhead[vf], ff)
            for code in np.bincount(sf).nonzero()[0]:       # the states faulted on, in code order
                m = sf == code
                book.count_faults(h.states[int(code)].name, vf[m], ff[m])
        plain = np.bincount(vm, weights=weight - faults, minlength=nvm)
        book.add(np.arange(nvm), overhead, plain)
        book.touches += np.bincount(vm, weights=weight, minlength=nvm)
        stall = np.bincount(vm, weights=faults * latency, minlength=nvm) + overhead * lam
        book.stall += np.minimum(stall, np.where(on, dt, 0.0))

    def _write(self, page: np.ndarray, rank: np.ndarray, vm: np.ndarray, pi: np.ndarray, wr: np.ndarray,
               lam: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> None:
        """Written pages hold new (unique) content. A write draw stands for the distinct 4 KiB pages
        its writes hit, ``scale * (1 - exp(-lam * wf * pi / scale)) / (n * wf * pi)``; in simulated
        pages that is the drawn one and the private pages among the next ranks (its resident
        neighbours of similar heat)."""
        h = self.host
        pg = h.pages
        wi = wr.nonzero()[0]
        wi = wi[self.private.take(pg.state[page[wi]])]
        if wi.size == 0:
            return
        v = vm[wi]
        sel = np.maximum(pi[wi] * h.workload.writes[v], 1e-300)
        scale = pg.scale
        written = -np.expm1(-lam[v] * sel / scale) / (draws[v] * sel)   # 4 KiB pages / scale
        extra = np.floor(written + rng.random(wi.size)).astype(np.int64) - 1
        alloc = np.maximum(h.workload.allocated[v], 1)
        near, _ = rank_runs(pg.base[v], rank[wi] + 1, np.minimum(np.maximum(extra, 0), alloc - 1), alloc)
        near = near[self.private.take(pg.state[near])]
        for wp in (page[wi], near):
            pg.content[wp] = unique_content(wp)

    def _companions(self, pages: np.ndarray, ranks: np.ndarray, kinds: np.ndarray,
                    extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pages a fault draw's other faults brought in: ``extra[i]`` pages after draw ``i`` in
        rank order (same VM, the other pages of similar heat its touches reached) that the same
        access faults on (``kinds[i]``: 0 a read, 1 a write; any technique's state) and no other
        draw has. Returns the pages and the index of the draw each came from.

        The look goes on past pages that do not fault, over a reach sized by how dense those states
        are in the VM, in at most five rounds of growing reach. Stopping at the next
        ``extra[i]`` ranks brought in only 30 % of the pages charged on `small` (the rest faulted
        again later, so stall grew as touch draws were made fewer).
        """
        h = self.host
        pg = h.pages
        alloc = np.maximum(h.workload.allocated[pg.vm[pages]], 1)
        base = pages - ranks
        missing = np.minimum(extra, alloc - 1)           # never the drawn page again
        seen = np.zeros(pages.size, dtype=np.int64)      # ranks looked at after each draw
        # share of the VM's allocated ranks in a faulting state, at least 1 in 64
        n_match = (pg.counts[pg.vm[pages]] * self.faults_on[kinds, : pg.ns]).sum(axis=1)
        density = np.minimum(np.maximum(n_match / alloc, 1.0 / 64), 1.0)
        taken = [pages]
        source: list[np.ndarray] = []
        for reach in (1.25, 2.5, 10.0, 40.0, 160.0):
            draw = ((missing > 0) & (seen < alloc - 1)).nonzero()[0]
            if draw.size == 0:
                break
            a = alloc[draw]
            span = np.minimum(np.ceil(reach * missing[draw] / density[draw]) + 2, a - 1 - seen[draw]).astype(np.int64)
            cpage, start = rank_runs(base[draw], ranks[draw] + 1 + seen[draw], span, a)
            src = draw.repeat(span)
            k = kinds[draw]
            state = pg.state[cpage]
            keep = (self.faults_on[k[0]].take(state) if (k == k[0]).all()
                    else self._faults_on_flat.take(kinds[src] * self.faults_on.shape[1] + state))
            # a page comes in once: the first draw to reach it gets it, the others look further
            hit = keep.nonzero()[0]
            keep[hit] = pg.first_seen(cpage[hit]) & ~pg.member(cpage[hit], np.concatenate(taken))
            got = keep.cumsum()                           # the first `missing` of them per draw
            before = np.where(start > 0, got[np.maximum(start - 1, 0)], 0)
            keep &= got <= (before + missing[draw]).repeat(span)
            missing -= np.bincount(src[keep], minlength=pages.size)
            seen[draw] += span
            taken.append(cpage[keep])
            source.append(src[keep])
        if not source:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return np.concatenate(taken[1:]), np.concatenate(source)

    def _serve_faults(self, pages: np.ndarray, writes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bring faulting pages back; latency per draw and whether its page is now mapped."""
        h = self.host
        s = h.settings
        uniq, inv = h.pages.distinct(pages)          # drawn pages first, then their companions
        ustate = h.pages.state[uniq]
        uwrite = np.bincount(inv, weights=writes, minlength=uniq.size) > 0
        ulat = np.zeros(uniq.size)
        uok = np.ones(uniq.size, dtype=bool)
        alloc = self.allocates[ustate]
        if alloc.any():
            uok[alloc] = self._admit_allocations(uniq[alloc])
        blocked = ~uok
        ulat[blocked] = s["latency.blocked_alloc"]
        for code in np.bincount(ustate[uok]).nonzero()[0]:
            m = uok & (ustate == code)
            idx = uniq[m]
            if code == FREE:
                h.pages.set_state(idx, RESIDENT)
                ulat[m] = s["latency.page_alloc"]
                continue
            lat = h.serve_fault(int(code), idx, uwrite[m])
            for extra in h.hook.memtune_fault_latency(host=h, state=int(code), pages=idx, latency=lat):
                if extra is not None:
                    lat += extra
            ulat[m] = lat
        return ulat[inv], uok[inv]

    def _admit_allocations(self, pages: np.ndarray) -> np.ndarray:
        """Which faults needing a machine page may have one now (host free memory, VM limit, low state)."""
        h = self.host
        pg = h.pages
        vm = pg.vm[pages]
        ok = ~h.blocked[vm]
        free = max(h.free_pages(), 0)
        funded = np.zeros(pages.size, dtype=bool)
        # VM limits: a VM at its limit must give a page back (hypervisor page-out) to take one
        room = np.floor(h.limit - h.held()).astype(np.int64)
        wanted = np.bincount(vm[ok], minlength=h.nvm)
        if (wanted > room).any():
            order = vm.argsort(kind="stable")
            svm = vm[order]
            first = np.searchsorted(svm, np.arange(h.nvm))
            pos = np.empty(pages.size, dtype=np.int64)
            pos[order] = np.arange(pages.size) - first[svm]
            over = ok & (pos >= room[vm])
            excess = np.bincount(vm[over], minlength=h.nvm)
            victims = pg.pick_random(h.rng("limit"), excess, self.resident_only)
            victims = victims[~np.isin(victims, pages)]
            if victims.size:
                h.page_out(victims)
            # what the page-out really freed: a compressed page still holds part of a page
            room = np.floor(h.limit - h.held()).astype(np.int64)
            ok &= pos < room[vm]
            # faults paid for by the VM's own page-outs use the frames those freed
            funded = over & ok
        # host free memory (as it was before any page-out), first come first served: the touched
        # pages before the companions that came with them
        rest = ok & ~funded
        ok = funded | (rest & (rest.cumsum() <= free))
        return ok

    def _allocate(self, on: np.ndarray) -> None:
        h = self.host
        active = h.sampler.estimate
        tau = h.settings["Mem.IdleTax"] / 100.0
        pb = h.page_bytes
        available = (h.memory - h.overhead_bytes - h.min_free) / pb - sum(h.host_pools.values())
        floor = np.where(on, h.reservation, 0.0)
        cap = np.where(on, np.minimum(np.minimum(h.limit, h.vm_pages),
                                      np.maximum(h.workload.allocated, h.reservation)), 0.0)
        h.targets = allocation_targets(max(available, 0.0), h.shares, active, tau, floor, cap)

    def _update_state(self, dt: float) -> None:
        h = self.host
        ratio = h.free_ratio
        new = next_state(h.state, ratio, h.settings["memtune.state_hysteresis"])
        h.time_in_state[h.state] += dt
        if new != h.state:
            old = h.state
            h.state = new
            h.emit("state-change", None, old=old.label, new=new.label, free_bytes=h.free_bytes(),
                   min_free=h.min_free, time=h.now)
        if new.label not in h.states_visited:
            h.states_visited.append(new.label)
        if not h.large_pages_broken and ratio < LARGE_PAGE_BREAK and h.large_pages.any():
            h.large_pages_broken = True
            h.emit("large-pages-broken", None, free_bytes=h.free_bytes(), time=h.now)
        h.blocked = (h.state == MemState.LOW) & (h.held() > h.targets + 1)

    # --- whole run ----------------------------------------------------------------------------

    def run(self, duration: float | None = None,
            progress: Callable[[float], None] | None = None) -> dict:
        h = self.host
        duration = h.scenario.duration if duration is None else duration
        tick = h.scenario.tick
        steps = int(round(duration / tick))
        self._stop = h.now + steps * tick
        for i in range(steps):
            self.step(tick)
            if progress is not None:
                progress((i + 1) / steps)
        self._stop = np.inf
        self.timeline.record()
        result = build_result(h, self.timeline)
        h.hook.memtune_finish(host=h, result=result)
        return result
