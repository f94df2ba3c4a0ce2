"""Workloads: what a guest does with its memory over time.

A workload says, at each moment, how much memory the guest has *allocated* (pages it uses; the rest
is free in the guest), how large its *working set* is (the pages that get most touches), where that
hot window sits, how fast it touches pages and how many touches write. Content mix and
compressibility say what the pages hold.

Each VM's pages are laid out in rank order: rank ``r`` is page ``base + r``. A touch is a draw over
ranks; a phase change moves the hot window (``offset``) instead of rewriting pages. The per-page
touch probability is known in closed form, which the engine uses to count faults without bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("constant", "phased", "diurnal", "boot-storm", "leak")
SKEWS = ("hotcold", "zipf")
MAX_DEMAND = 16.0      # allocated / wss above 1: the guest wants more memory than it has (pages to its disk)
CONTENT_KINDS = ("zero", "template", "duplicate", "unique")
COMPRESS_CLASSES = ("le_1k", "le_2k", "le_3k", "worse")


@dataclass(frozen=True)
class Phase:
    """From ``at`` seconds on: new working set / allocation, hot window moved by ``shift``."""

    at: float
    wss: float | None = None          # fraction of configured memory
    allocated: float | None = None    # fraction of configured memory
    shift: float = 0.0                # hot window moves by this fraction of allocated memory


@dataclass(frozen=True)
class WorkloadSpec:
    """A guest's memory behaviour. Sizes are fractions of the VM's configured memory."""

    kind: str = "constant"
    allocated: float = 0.8  # guest memory in use (anonymous + page cache); above 1: more than it has
    wss: float = 0.25  # working set (hot window); may exceed 1 too
    cache: float = 0.0  # page cache: the coldest part of allocated (clean, dropped first)
    skew: str = "hotcold"
    hot_share: float = 0.9  # share of touches that land in the working set
    zipf_s: float = 1.0  # Zipf exponent inside the working set
    touch_rate: float = 20000.0  # page touches per second (4 KiB pages)
    write_fraction: float = 0.2
    content: tuple[float, float, float, float] = (0.05, 0.3, 0.05, 0.6)  # zero/template/dup/unique
    duplicate_copies: int = 4  # pages per intra-VM duplicate group
    compressibility: tuple[float, float, float, float] = (0.2, 0.3, 0.2, 0.3)  # <=1K/<=2K/<=3K/worse
    phases: tuple[Phase, ...] = ()
    period: float = 3600.0  # diurnal period, seconds
    amplitude: float = 0.5  # diurnal swing of the working set (0..1)
    boot_time: float = 120.0  # boot-storm: seconds to touch all memory
    boot_rate: float = 5.0  # boot-storm: touch-rate multiplier while booting
    leak_rate: float = 0.0  # leak: fraction of configured memory leaked per hour
    profile: str | None = None  # measured profile file this spec was filled from
    extra: dict = field(default_factory=dict, compare=False)


class WorkloadState:
    """Vectorised runtime of every VM's workload: one array per parameter, one entry per VM."""

    def __init__(
        self, specs: list[WorkloadSpec], pages: np.ndarray, starts: np.ndarray, kernel_share: float = 0.0
    ) -> None:
        self.specs = specs
        self.pages = pages.astype(np.int64)  # configured pages per VM
        # what the guest can hold for its workload: configured memory minus its kernel's per-page
        # structures (sized by configured memory, so a ballooned VM keeps them)
        self.capacity = np.maximum(np.floor(self.pages * (1.0 - kernel_share)), 1).astype(np.int64)
        self.starts = starts.astype(np.float64)
        n = len(specs)
        f = np.array
        self.base_alloc = f([s.allocated for s in specs], dtype=np.float64)
        self.base_wss = f([s.wss for s in specs], dtype=np.float64)
        self.base_cache = f([s.cache for s in specs], dtype=np.float64)
        self.hot_share = f([s.hot_share for s in specs], dtype=np.float64)
        self.zipf_s = f([s.zipf_s for s in specs], dtype=np.float64)
        self.is_zipf = f([s.skew == "zipf" for s in specs], dtype=bool)
        self.base_rate = f([s.touch_rate for s in specs], dtype=np.float64)
        self.write_fraction = f([s.write_fraction for s in specs], dtype=np.float64)
        self.kind = [s.kind for s in specs]
        # current values
        self.allocated = np.zeros(n, dtype=np.int64)  # pages the guest uses (ranks [0, allocated))
        self.wss = np.ones(n, dtype=np.int64)
        self.offset = np.zeros(n, dtype=np.int64)
        self.rate = np.zeros(n, dtype=np.float64)
        self.overflow_rate = np.zeros(n, dtype=np.float64)  # touches of pages on the guest's disk
        self.cache = np.zeros(n, dtype=np.int64)  # page-cache pages (coldest allocated ranks)
        self.writes = self.write_fraction.copy()
        self.share = self.hot_share.copy()
        self.on = np.zeros(n, dtype=bool)
        self._derive()
        self._shift_total = np.zeros(n, dtype=np.float64)
        self._kinds = {
            kind: np.array([i for i, s in enumerate(specs) if s.kind == kind], dtype=np.int64)
            for kind in KINDS
        }
        self._phase_table(specs)
        self._amplitude = f([s.amplitude for s in specs], dtype=np.float64)
        self._period = f([s.period for s in specs], dtype=np.float64)
        self._leak = f([s.leak_rate for s in specs], dtype=np.float64)
        self._boot_time = f([s.boot_time for s in specs], dtype=np.float64)
        self._boot_rate = f([s.boot_rate for s in specs], dtype=np.float64)

    def _phase_table(self, specs: list[WorkloadSpec]) -> None:
        """Per phased VM: phase start times and the values in force after k phases (k = 0..m)."""
        idx = self._kinds["phased"]
        m = max((len(specs[i].phases) for i in idx), default=0)
        self._phase_at = np.full((idx.size, m), np.inf)
        self._phase_wss = np.zeros((idx.size, m + 1))
        self._phase_alloc = np.zeros((idx.size, m + 1))
        self._phase_shift = np.zeros((idx.size, m + 1))
        for row, i in enumerate(idx):
            w, a, sh = specs[i].wss, specs[i].allocated, 0.0
            self._phase_wss[row, 0], self._phase_alloc[row, 0] = w, a
            for k, ph in enumerate(specs[i].phases):
                w = w if ph.wss is None else ph.wss
                a = a if ph.allocated is None else ph.allocated
                sh += ph.shift
                self._phase_at[row, k] = ph.at
                self._phase_wss[row, k + 1], self._phase_alloc[row, k + 1] = w, a
                self._phase_shift[row, k + 1] = sh
            self._phase_wss[row, len(specs[i].phases) + 1 :] = w
            self._phase_alloc[row, len(specs[i].phases) + 1 :] = a
            self._phase_shift[row, len(specs[i].phases) + 1 :] = sh

    def advance(self, now: float) -> np.ndarray:
        """Move every workload to time ``now``; returns the previous ``allocated`` (pages)."""
        prev = self.allocated.copy()
        t = now - self.starts
        self.on = t >= 0
        alloc = self.base_alloc.copy()
        wss = self.base_wss.copy()
        rate = self.base_rate.copy()
        share = self.hot_share.copy()
        writes = self.write_fraction.copy()
        k = self._kinds
        if k["diurnal"].size:
            i = k["diurnal"]
            wss[i] = self.base_wss[i] * (
                1.0 + self._amplitude[i] * np.sin(2 * np.pi * t[i] / self._period[i])
            )
        if k["leak"].size:
            i = k["leak"]
            alloc[i] = np.minimum(1.0, self.base_alloc[i] + self._leak[i] * np.maximum(t[i], 0) / 3600.0)
        if k["boot-storm"].size:
            i = k["boot-storm"]
            booting = i[(t[i] >= 0) & (t[i] < self._boot_time[i])]
            if booting.size:
                ramp = np.minimum(1.0, (t[booting] + 1.0) / self._boot_time[booting])
                alloc[booting] = np.maximum(self.base_alloc[booting], ramp)
                wss[booting] = np.maximum(self.base_wss[booting], 1.0 / 64)
                rate[booting] = self.base_rate[booting] * self._boot_rate[booting]
                writes[booting] = 1.0
                share[booting] = 0.0
        if k["phased"].size:
            i = k["phased"]
            done = (self._phase_at <= np.maximum(t[i], -1.0)[:, None]).sum(axis=1)
            rows = np.arange(i.size)
            wss[i] = self._phase_wss[rows, done]
            alloc[i] = self._phase_alloc[rows, done]
            self._shift_total[i] = self._phase_shift[rows, done]
        alloc = np.minimum(np.maximum(alloc, 0.0), MAX_DEMAND)
        demand = np.maximum(1, np.floor(alloc * self.pages)).astype(np.int64)
        w_d = np.maximum(np.floor(np.minimum(np.maximum(wss, 0.0), MAX_DEMAND) * self.pages), 1).astype(
            np.int64
        )
        w_d = np.minimum(w_d, demand)
        over = demand > self.capacity
        rate = np.where(self.on, rate, 0.0)
        self.overflow_rate = np.zeros(rate.size)
        if over.any():
            # the guest keeps its hottest pages; touches of the others go to its own disk
            share, rate, self.overflow_rate = self._overflow(over, demand, w_d, share, rate)
        allocated = np.minimum(demand, self.capacity)
        self.allocated = np.where(self.on, allocated, 0)
        self.wss = np.minimum(w_d, np.maximum(self.allocated, 1))
        cache = np.floor(self.base_cache * self.pages).astype(np.int64)
        self.cache = np.minimum(np.maximum(cache - (demand - allocated), 0), self.allocated)
        self.offset = (np.floor(self._shift_total * np.maximum(self.allocated, 1))).astype(np.int64)
        self.rate = rate
        self.share = share
        self.writes = writes
        self._derive()
        return prev

    def _overflow(
        self, over: np.ndarray, demand: np.ndarray, w_d: np.ndarray, share: np.ndarray, rate: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Guests wanting more than their capacity C hold their C hottest pages (what an LRU keeps
        under a steady touch law); the touches of the rest are the share ``q`` served from disk.
        Returns the hot share among in-memory touches, the in-memory touch rate and the disk rate."""
        c = self.capacity.astype(np.float64)
        d, w = demand.astype(np.float64), w_d.astype(np.float64)
        cold_in = (1.0 - share) * np.minimum(c, d) / d  # cold component held in memory
        hot_frac = np.minimum(c / w, 1.0)  # hotcold: uniform hot window
        z = self.is_zipf & (c < w)
        if z.any():  # Zipf: the window's head
            e = np.where(np.abs(self.zipf_s - 1.0) < 1e-9, 0.0, 1.0 - self.zipf_s)
            cz, wz, ez = c[z], w[z], e[z]
            with np.errstate(divide="ignore", invalid="ignore"):
                f = np.where(
                    ez == 0.0,
                    np.log1p(cz) / np.log1p(wz),
                    ((cz + 1.0) ** ez - 1.0) / ((wz + 1.0) ** ez - 1.0),
                )
            hot_frac[z] = f
        hot_in = share * hot_frac
        q = np.where(over, np.clip(1.0 - hot_in - cold_in, 0.0, 1.0), 0.0)
        kept = np.maximum(1.0 - q, 1e-12)
        new_share = np.where(over, np.clip(hot_in / kept, 0.0, 1.0), share)
        return new_share, np.where(over, rate * (1.0 - q), rate), np.where(over, rate * q, 0.0)

    def steady(self, t0: float, t1: float) -> bool:
        """No VM starts, boots or changes phase in ``(t0, t1]``."""
        a, b = t0 - self.starts, t1 - self.starts
        if ((a < 0) & (b >= 0)).any():
            return False
        i = self._kinds["boot-storm"]
        if i.size and ((b[i] >= 0) & (a[i] < self._boot_time[i])).any():
            return False
        i = self._kinds["phased"]
        return not (i.size and ((self._phase_at > a[i][:, None]) & (self._phase_at <= b[i][:, None])).any())

    def _derive(self) -> None:
        # per-touch probability of one cold page and of one page of a uniform hot set
        self._alloc1 = np.maximum(self.allocated, 1)
        self._p_cold = (1.0 - self.share) / self._alloc1
        self._p_hot = self.share / self.wss
        # Zipf law on [1, wss + 1): per-VM constants of its CDF, so a draw costs one power
        n1 = self.wss.astype(np.float64) + 1.0
        self._z_one = np.abs(self.zipf_s - 1.0) < 1e-9
        self._z_e = np.where(self._z_one, 1.0, 1.0 - self.zipf_s)
        self._z_n1 = n1
        with np.errstate(divide="ignore", invalid="ignore"):
            self._z_norm = np.where(self._z_one, np.log(n1), n1 ** (1.0 - self.zipf_s) - 1.0)

    # --- touch law ---------------------------------------------------------------------------

    def draw(self, rng: np.random.Generator, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``counts[v]`` touches for every VM at once: (vm index, rank) arrays."""
        vm = np.arange(len(counts)).repeat(counts)
        if vm.size == 0:
            return vm, vm.copy()
        a = np.maximum(self.allocated[vm], 1)
        w = self.wss[vm]
        u = rng.random(vm.size)
        hot = rng.random(vm.size) < self.share[vm]
        cold_rank = np.floor(u * a).astype(np.int64)
        hot_rank = np.floor(u * w).astype(np.int64)
        z = hot & self.is_zipf[vm]
        if z.any():
            hot_rank[z] = self._zipf_inverse(u[z], vm[z])
        hot_rank = (hot_rank + self.offset[vm]) % a
        rank = np.where(hot, hot_rank, cold_rank)
        return vm, np.minimum(rank, a - 1)

    def _rel(self, vm: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Position of ``rank`` counted from the start of VM ``vm``'s hot window."""
        rel = rank - self.offset[vm]
        rel %= self._alloc1[vm]
        return rel

    def probability(self, vm: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Probability that one touch of VM ``vm`` lands on page ``rank`` (0 for guest-free pages)."""
        rel = self._rel(vm, rank)
        p = self._p_cold[vm]
        hot = (rel < self.wss[vm]).nonzero()[0]
        if hot.size:
            vh = vm[hot]
            p_hot = self._p_hot[vh]
            z = self.is_zipf[vh].nonzero()[0]
            if z.size:
                vz = vh[z]
                p_hot[z] = self.share[vz] * self._zipf_pmf(rel[hot[z]], vz)
            p[hot] += p_hot
        p[rank >= self.allocated[vm]] = 0.0
        return p

    def _zipf_inverse(self, u: np.ndarray, vm: np.ndarray) -> np.ndarray:
        """Ranks 0..wss-1 of VM ``vm`` from a continuous Zipf(s) law on [1, wss+1) by inverse CDF."""
        one = self._z_one[vm]
        x = (self._z_norm[vm] * u + 1.0) ** (1.0 / self._z_e[vm])
        if one.any():
            x[one] = self._z_n1[vm[one]] ** u[one]
        return np.minimum(np.maximum(np.floor(x - 1.0), 0), self.wss[vm] - 1).astype(np.int64)

    def _zipf_pmf(self, rel: np.ndarray, vm: np.ndarray) -> np.ndarray:
        """Probability of rank ``rel`` (0-based) under the Zipf law of `_zipf_inverse`."""
        x = np.maximum(rel, 0).astype(np.float64) + 1.0
        e = self._z_e[vm]
        p = ((x + 1.0) ** e - x**e) / self._z_norm[vm]
        one = self._z_one[vm]
        if one.any():
            p[one] = np.log1p(1.0 / x[one]) / self._z_norm[vm[one]]
        return p
