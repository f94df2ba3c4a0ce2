"""One VM as a process: ``python -m memtune.live.worker CONFIG.json`` (started by the Linux driver).

The worker joins its cgroups after the interpreter and numpy are loaded (cgroup v1 charges a page
to the group of the task that first touched it and does not move charges, so the interpreter's
own memory stays outside the VM's limit; what the worker allocates after joining is measured as
its baseline and added to the VM's limits), maps the VM's pages and, each quantum, draws
touches with the model's own workload law (:class:`memtune.core.workload.WorkloadState`) at the
workload's rate. A random sample of touches is timed one by one; a sample whose thread was
preempted meanwhile (involuntary context switch) is dropped, since that wait is the CPU's, not
memory's. Extra latency is the time above the median of touches on resident pages measured at
start. It writes its statistics as JSON when told to stop.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from memtune.core.latency import NB, bucket_of
from memtune.core.workload import Phase, WorkloadSpec, WorkloadState
from memtune.live.content import PAGE
from memtune.live.control_block import GO_FILL, GO_RUN, GO_STOP, ControlBlock, LatencyBlock
from memtune.live.guest import GuestMemory

QUANTUM = 0.05


def workload_from_dict(d: dict) -> WorkloadSpec:
    d = dict(d)
    d["phases"] = tuple(Phase(**p) for p in d.get("phases", ()))
    for k in ("content", "compressibility"):
        d[k] = tuple(d[k])
    return WorkloadSpec(**d)


def _wait(ctl: ControlBlock, level: int) -> None:
    while ctl["go"] < level:
        time.sleep(0.01)


class Sampler:
    """ESX-style working-set sampling inside the guest: the touched share of ``size`` random pages
    per period, smoothed fast and slow; the estimate is the larger (as memtune.core.sampling)."""

    def __init__(self, rng: np.random.Generator, n: int, size: int, period: float, fast: float, slow: float):
        self.rng, self.n, self.size, self.period = rng, n, size, period
        self.fast_a, self.slow_a = fast, slow
        self.fast = self.slow = 1.0
        self.touched = np.zeros(n, dtype=bool)
        self.next = period

    def update(self, now: float, ranks: np.ndarray, allocated: int) -> float:
        self.touched[ranks] = True
        if now >= self.next:
            sample = self.rng.integers(0, max(allocated, 1), self.size)
            f = float(self.touched[sample].mean())
            self.fast += self.fast_a * (f - self.fast)
            self.slow += self.slow_a * (f - self.slow)
            self.touched[:] = False
            self.next += self.period
        return max(self.fast, self.slow)


class Worker:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.ctl = ControlBlock(cfg["ctl"])
        self.lat = LatencyBlock(cfg["latency"]) if cfg.get("latency") else None   # for live metrics
        data = np.load(cfg["content"])
        self.n = int(cfg["pages"])
        self.mem = GuestMemory(self.n, data["keys"], data["zclass"], cfg["mergeable"], cfg["guest_swap"],
                               cfg.get("locked", 0))
        self.initial = data["resident"]
        spec = workload_from_dict(cfg["workload"])
        self.wl = WorkloadState([spec], np.array([self.n]), np.array([float(cfg["start"])]))
        self.rng = np.random.Generator(np.random.PCG64(int(cfg["seed"])))
        s = cfg["sampling"]
        self.sampler = Sampler(self.rng, self.n, s["size"], s["period"], s["fast"], s["slow"])
        self.hist = np.zeros(NB)
        self.extra = 0.0
        self.touches = 0.0
        self.timed = self.dropped = 0
        self.waited = 0.0
        self.parts = {"guest_swap_in": 0.0, "first_touch": 0.0, "other": 0.0}   # extra seconds by cause
        self.baseline = 0.0
        self.vm = int(cfg.get("vm_index", 0))
        self.write_round = 0
        self.reclaim_seq = 0                      # the driver's last page-out request done
        self.words = self.mem.view.cast("Q")      # the VM's memory as 8-byte words (writes' stamps)
        self._ru = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw

    # --- latency bookkeeping ---------------------------------------------------------------------
    def _add(self, extra: np.ndarray, weight: float) -> None:
        extra = np.maximum(extra, 0.0)
        self.extra += float(extra.sum()) * weight
        self.hist += np.bincount(bucket_of(extra), minlength=NB) * weight

    def _stamps(self, ranks: np.ndarray) -> np.ndarray:
        """What a write stores (8 bytes at byte 64 of the page): unique to this VM and page, and new
        at each quantum, so a written page matches no other page, as the model's write makes it
        unique. (Adding 1 to a byte made two VMs' copies of a written template or zero page equal
        again, and KSM merged them: 4-5x the model's sharing on `vdi`.)"""
        self.write_round = (self.write_round + 1) & 0xFF
        vm = np.uint64(self.vm + 1) << np.uint64(48)
        return vm | (ranks.astype(np.uint64) << np.uint64(8)) | np.uint64(self.write_round)

    def _timed(self, offs: list[int], stamps: list[int]) -> np.ndarray:
        """Time touches one by one (a write stores its stamp, a read loads a byte); drop those the
        scheduler preempted, and take from the others the time they then waited for a CPU (a touch
        that slept on a swap-in waits on the run queue once the I/O is done: :mod:`memtune.live.cpuwait`)."""
        view, words, perf, getru, thread = (
            self.mem.view,
            self.words,
            time.perf_counter_ns,
            resource.getrusage,
            resource.RUSAGE_THREAD,
        )
        out, waits = [], []
        rd = self.mem.run_delay.ns
        last, d0 = getru(thread).ru_nivcsw, rd()
        for off, s in zip(offs, stamps, strict=True):
            t0 = perf()
            if s:
                words[off >> 3] = s
            else:
                view[off]
            t1 = perf()
            now, d1 = getru(thread).ru_nivcsw, rd()
            if now == last:
                out.append(t1 - t0)
                waits.append(min(d1 - d0, t1 - t0))
            else:
                self.dropped += 1
            last, d0 = now, d1
        self.waited = sum(waits) * 1e-9       # of these samples, seconds on the run queue
        return (np.array(out, dtype=np.float64) - np.array(waits, dtype=np.float64)) * 1e-9

    def calibrate(self) -> None:
        hot = np.flatnonzero(self.mem.backed)
        if hot.size == 0:
            return
        offs = (self.rng.choice(hot, 3000) * PAGE + 64).tolist()
        lat = self._timed(offs, [0] * len(offs))
        self.baseline = float(np.median(lat)) if lat.size else 0.0
        self.dropped = 0

    # --- one quantum -----------------------------------------------------------------------------
    def step(self, now: float, dt: float) -> None:
        wl = self.wl
        wl.advance(now)
        if not wl.on[0]:
            return
        allocated = int(wl.allocated[0])
        k = int(self.rng.poisson(wl.rate[0] * dt))
        _, ranks = wl.draw(self.rng, np.array([k]))
        writes = self.rng.random(k) < wl.writes[0]
        lat = self.mem.swap_in(ranks)
        if lat.size:
            self._add(lat - self.baseline, 1.0)
            self.touches += lat.size
            self.parts["guest_swap_in"] += float(lat.sum())
        nfirst, secs = self.mem.first_touch(ranks)
        if nfirst:
            self._add(np.full(nfirst, secs / nfirst - self.baseline), 1.0)
            self.touches += nfirst
            self.parts["first_touch"] += secs
        rest = k - lat.size - nfirst
        m = min(rest, max(1, int(self.cfg["timed_per_s"] * dt))) if rest > 0 else 0
        if m:
            pick = self.rng.choice(k, m, replace=False)
            offs = (ranks[pick] * PAGE + 64).tolist()
            stamps = np.where(writes, self._stamps(ranks), np.uint64(0))
            t = self._timed(offs, stamps[pick].tolist())
            if t.size:
                self.timed += t.size
                self._add(t - self.baseline, rest / t.size)
                self.mem.cpu_wait += self.waited * rest / t.size
                self.parts["other"] += float(np.maximum(t - self.baseline, 0).sum()) * rest / t.size
            self.touches += rest
            bulk = np.ones(k, dtype=bool)
            bulk[pick] = False
            r, w = ranks[bulk], writes[bulk]
            self.mem.flat[r[~w] * PAGE + 64].sum()
            self.mem.pages.view(np.uint64)[r[w], 8] = stamps[bulk][w]
        est = self.sampler.update(now, ranks, allocated)
        self._balloon(allocated)
        self._host_reclaim(allocated)
        self._publish(allocated, est, now)

    def _balloon(self, allocated: int) -> None:
        target = self.ctl["balloon"]
        if target == self.mem.balloon and not self.mem.needs_coldness(allocated):
            return
        self.mem.balloon = target
        cold = None
        if self.mem.needs_coldness(allocated):
            cold = self._coldness(allocated)
        self.mem.set_balloon(target, allocated, cold)

    def _coldness(self, allocated: int) -> np.ndarray:
        """Ranks [0, allocated) coldest first, by the workload's touch law."""
        p = self.wl.probability(np.zeros(allocated, dtype=np.int64), np.arange(allocated))
        return np.argsort(p, kind="stable")

    def _host_reclaim(self, allocated: int) -> None:
        """A page-out the driver asked for (its ``reclaim_seq`` moved): done once per request."""
        seq = self.ctl["reclaim_seq"]
        if seq == self.reclaim_seq:
            return
        self.reclaim_seq = seq
        self.mem.host_page_out(self.ctl["reclaim"], allocated, self._coldness(allocated))

    def _publish(self, allocated: int, est: float, now: float) -> None:
        c = self.ctl
        c["ballooned"] = self.mem.balloon
        c["touches"] = int(self.touches)
        c["active_ppm"] = int(est * 1e6)
        c["allocated"] = allocated
        c["wss"] = int(self.wl.wss[0])
        c["guest_swap_ins"] = self.mem.swap_ins
        c["guest_swap_outs"] = self.mem.swap_outs
        c["first_touches"] = self.mem.first_touches
        c["backed"] = int(self.mem.backed.sum())
        c["free_taken"] = self.mem.free_taken
        c["resident"] = self.mem.resident()
        c["host_paged"] = self.mem.host_paged
        c["heartbeat_ns"] = int(now * 1e9)
        if self.lat is not None:
            self.lat.write(self.touches, self.extra, now - min(self.cfg["warmup"], now), self.hist)

    # --- lifecycle -------------------------------------------------------------------------------
    def run(self) -> None:
        ctl = self.ctl
        _wait(ctl, GO_FILL)
        self.mem.write_content(np.flatnonzero(self.initial))
        self.calibrate()
        ctl["resident"] = self.mem.resident()
        ctl["phase"] = 2
        _wait(ctl, GO_RUN)
        ctl["phase"] = 3
        t0 = ctl["t0_ns"]
        last = 0.0
        warm = self.cfg["warmup"] <= 0
        while ctl["go"] < GO_STOP:
            now = (time.monotonic_ns() - t0) / 1e9
            if now >= self.cfg["duration"]:
                break
            if not warm and now >= self.cfg["warmup"]:
                self.reset_stats()
                warm = True
            dt = min(now - last, 4 * QUANTUM)
            if dt > 0:
                self.step(now, dt)
            last = now
            time.sleep(max(0.0, QUANTUM - ((time.monotonic_ns() - t0) / 1e9 - now)))
        self.write_stats(last - min(self.cfg["warmup"], last))
        ctl["phase"] = 4
        _wait(ctl, GO_STOP)  # keep the VM's memory until the driver has read the host

    def reset_stats(self) -> None:
        """Statistics count from the end of the warm-up, as the model's report does."""
        self.hist[:] = 0
        self.extra = self.touches = 0.0
        self.timed = self.dropped = 0
        self.mem.cpu_wait = 0.0
        self.parts = dict.fromkeys(self.parts, 0.0)

    def write_stats(self, elapsed: float) -> None:
        stats = {
            "touches": self.touches,
            "timed": self.timed,
            "dropped_preempted": self.dropped,
            "extra": self.extra,
            "hist": self.hist.tolist(),
            "baseline": self.baseline,
            "elapsed": elapsed,
            "guest_swap_ins": self.mem.swap_ins,
            "guest_swap_outs": self.mem.swap_outs,
            "first_touches": self.mem.first_touches,
            "balloon": self.mem.balloon,
            "extra_by_cause": self.parts,
            "host_paged": self.mem.host_paged,
            "cpu_wait": self.mem.cpu_wait,        # seconds on the run queue kept out of the latencies
        }
        tmp = Path(self.cfg["stats"] + ".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(self.cfg["stats"])


PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    import ctypes
    import os
    import signal

    # a worker does not outlive its driver (a SIGKILLed driver leaves no VM running; its cgroups,
    # swap and sysfs values wait for `memtune live cleanup`)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() == 1:
        return  # the driver died before the line above
    cfg = json.loads(Path(argv[1]).read_text())

    for procs in cfg["cgroups"]:
        Path(procs).write_text(f"{os.getpid()}\n")
    worker = Worker(cfg)
    worker.ctl["region"] = worker.mem._addr
    worker.ctl["phase"] = 1
    worker.run()


if __name__ == "__main__":
    main(sys.argv)
