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
from memtune.core.pages import FREE, RESIDENT
from memtune.core.report import Timeline, build_result
from memtune.core.touches import TouchRound, companions, draw_round, write_contents

# A round of touch draws counts each 4 KiB page once, so a span of k ticks drawn as one round loses
# the refaults per-tick rounds would have counted: about (k - 1) * (1 - s) * tick / round of a VM's
# faults, where s is its faults per touch of an unmapped page in the last round. Longer spans only
# while that stays below 2 % for every VM (a VM thrashing against its limit stays per tick).
REPEAT_LOSS = 0.02


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
        self.resident_only = st.table(RESIDENT)
        self.timeline = Timeline(h)
        self._next_report = 0.0
        self._warm = h.scenario.warmup <= 0
        self._touched_until = 0.0           # touch draws made so far stand for the time up to here
        self._free_seen: deque[tuple[float, float]] = deque(
            maxlen=4
        )  # (time, free memory) at the last rounds
        self._stop = np.inf  # end of the run, where one is under way
        # per simulated second of the last round, the largest share of a VM's touches of unmapped
        # pages that repeated one already faulted in that round
        self._repeat_rate = 0.0
        h.hook.memtune_configure(host=h)
        self._policy_event()

    def _policy_event(self) -> None:
        h = self.host
        h.emit(
            "policy",
            None,
            settings={k: v for k, v in h.settings.items()},
            vms={
                v.name: {
                    "reservation": v.reservation,
                    "limit": v.limit,
                    "shares": v.shares,
                    "maxmemctl": v.maxmemctl,
                    "salt": v.salt,
                }
                for v in h.vms
            },
        )

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
        """One round of touch draws: draw and classify, bring in what faults, write, account."""
        h = self.host
        rng = h.rng("touch")
        r = draw_round(h, rng, lam, draws, self.read_fault, self.write_fault)
        if r is None:
            return
        if r.fi.size:
            self._bring_in(r, lam, draws, rng)
        h.pages.last_touch[r.page[r.served]] = now  # touches that found their page mapped
        write_contents(h, self.private, r, r.write & r.served, lam, draws, rng)
        self._account(r, lam, dt, on)

    def _bring_in(self, r: TouchRound, lam: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> None:
        """Charge each fault draw its 4 KiB faults (engine docstring), bring in its pages and the
        companions those faults stand for, and note what each drawn touch waited."""
        h = self.host
        pg = h.pages
        fi = r.fi
        vf = r.vm[fi]
        read = r.read_fault[fi]
        sel = np.maximum(r.pi[fi] * np.where(read, 1.0, h.workload.writes[vf]), 1e-300)
        scale = pg.scale
        r.faults[fi] = np.minimum(scale * -np.expm1(-lam[vf] * sel / scale) / (draws[vf] * sel), r.weight[fi])
        # simulated pages this draw's 4 KiB faults amount to; the drawn page is one of them
        companions_wanted = np.floor(r.faults[fi] / scale + rng.random(fi.size)).astype(np.int64) - 1
        companions_wanted = np.maximum(companions_wanted, 0)
        companions_wanted[~pg.first_seen(r.page[fi])] += 1  # a page drawn twice comes in once
        # no companions where allocations would be refused anyway
        refused = self.allocates[r.state[fi]] & (h.blocked[vf] | (h.free_pages() <= 0))
        companions_wanted[refused] = 0
        # companions: the pages near the draw the same access faults on (a read: states that
        # fault on reads; a write to a shared page: states that fault on writes)
        cpage, src = companions(
            h, self.faults_on, r.page[fi], r.rank[fi], (~read).astype(np.intp), companions_wanted
        )
        # companions of a write fault (COW) are written too; of a read fault, only read
        cwrite = (r.write[fi] & ~read)[src]
        latency, mapped = self._serve_faults(
            np.concatenate([r.page[fi], cpage]), np.concatenate([r.write[fi], cwrite])
        )
        r.latency[fi] = latency[: fi.size]
        r.served[fi] = mapped[: fi.size]

    def _account(self, r: TouchRound, lam: np.ndarray, dt: float, on: np.ndarray) -> None:
        """Latency, faults, touches and stall of the round into the latency book."""
        h = self.host
        overhead = np.zeros(h.nvm)
        for extra in h.hook.memtune_access_overhead(host=h):
            if extra is not None:
                overhead += np.asarray(extra, dtype=np.float64)
        book = h.book
        nvm = h.nvm
        vm, faults, fi = r.vm, r.faults, r.fi
        self._repeat_rate = 0.0
        if fi.size:
            vf, ff, sf = vm[fi], faults[fi], r.state[fi]
            unmapped = np.bincount(vf, weights=r.weight[fi], minlength=nvm)
            brought = np.bincount(vf, weights=ff, minlength=nvm)
            hit = unmapped > 0
            self._repeat_rate = float((1.0 - brought[hit] / unmapped[hit]).max()) / dt
            book.add(vf, r.latency[fi] + overhead[vf], ff)
            for code in np.bincount(sf).nonzero()[0]:  # the states faulted on, in code order
                m = sf == code
                book.count_faults(h.states[int(code)].name, vf[m], ff[m])
        plain = np.bincount(vm, weights=r.weight - faults, minlength=nvm)
        book.add(np.arange(nvm), overhead, plain)
        book.touches += np.bincount(vm, weights=r.weight, minlength=nvm)
        stall = np.bincount(vm, weights=faults * r.latency, minlength=nvm) + overhead * lam
        book.stall += np.minimum(stall, np.where(on, dt, 0.0))

    def _serve_faults(self, pages: np.ndarray, writes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bring faulting pages back; latency per draw and whether its page is now mapped."""
        h = self.host
        s = h.settings
        uniq, inv = h.pages.distinct(pages)  # drawn pages first, then their companions
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
            victims = h.pick_victims(h.rng("limit"), excess, self.resident_only)
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
        cap = np.where(
            on,
            np.minimum(np.minimum(h.limit, h.vm_pages), np.maximum(h.workload.allocated, h.reservation)),
            0.0,
        )
        h.targets = allocation_targets(max(available, 0.0), h.shares, active, tau, floor, cap)

    def _update_state(self, dt: float) -> None:
        h = self.host
        ratio = h.free_ratio
        new = next_state(h.state, ratio, h.settings["memtune.state_hysteresis"])
        h.time_in_state[h.state] += dt
        if new != h.state:
            old = h.state
            h.state = new
            h.emit(
                "state-change",
                None,
                old=old.label,
                new=new.label,
                free_bytes=h.free_bytes(),
                min_free=h.min_free,
                time=h.now,
            )
        if new.label not in h.states_visited:
            h.states_visited.append(new.label)
        if not h.large_pages_broken and ratio < LARGE_PAGE_BREAK and h.large_pages.any():
            h.large_pages_broken = True
            h.emit("large-pages-broken", None, free_bytes=h.free_bytes(), time=h.now)
        h.blocked = (h.state == MemState.LOW) & (h.held() > h.targets + 1)

    # --- whole run ----------------------------------------------------------------------------

    def run(self, duration: float | None = None, progress: Callable[[float], None] | None = None) -> dict:
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
