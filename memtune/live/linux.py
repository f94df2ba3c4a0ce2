"""The Linux driver: a scenario's VMs as worker processes under the kernel's own mechanisms.

Mapping (docs/live.md): host -> a parent memory cgroup limited to the scaled host memory (the
model's overhead replaced by the workers' own); VM -> a worker in its own memory cgroup;
limit -> ``memory.limit_in_bytes``; reservation -> the worker locks that share of its memory
(``mlock2(MLOCK_ONFAULT)``; v1 has no ``memory.min``); sharing -> ``MADV_MERGEABLE`` + KSM;
compression -> a zram swap device sized from ``Mem.MemZipMaxPct`` of VM memory; hypervisor swap ->
a swap file; balloon -> the worker's driver, sized each tick by :class:`memtune.live.control.Controller`.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memtune.core.memstate import STATE_NAMES, MemState
from memtune.core.pages import CONTENT_BITS, FREE
from memtune.core.scenario import Scenario
from memtune.core.simulation import build_host
from memtune.live import cgroup, ksm, swap
from memtune.live.content import canonical_classes
from memtune.live.control import Controller
from memtune.live.control_block import GO_FILL, GO_RUN, GO_STOP, ControlBlock, LatencyBlock
from memtune.live.figures import live_figures
from memtune.live.limiter import LimitWriter
from memtune.live.lock import host_lock
from memtune.live.measure import host_sample, vm_counters, zram_share
from memtune.live.oomguard import guard_limited
from memtune.live.outcome import final_amounts, read_stats, vm_rows
from memtune.live.safety import preflight
from memtune.live.spawn import start_worker, worker_config
from memtune.live.state import STATE_DIR, STATE_FILE, HostError, HostState, opened_state

PAGE = 4096
RECLAIM_AT = 0.24          # of minFree: inside the hard state (16-32 %), where ESX swaps
LIMIT_STEP = 0.05          # of the capacity: the most the parent's limit is posted below the usage


@dataclass
class LiveOptions:
    force: bool = False                    # go ahead although KSM / swap / zram look in use
    lock_timeout: float = 900.0
    ksm: dict[str, int] = field(default_factory=dict)   # KSM sysfs values over the policy's
    zram_algorithm: str = "lz4"
    timed_per_s: int = 2000                # touches timed one by one, per VM and second
    swap_dir: str = "/var/tmp"             # the swap file and the guests' swap files
    state_path: Path = STATE_FILE
    balloon: dict[str, int] = field(default_factory=dict)   # VM name -> balloon bytes, pinned
    observer: Any = None                   # memtune.live.observe.RunObserver (the metrics exporter)
    host_reclaim: bool = True              # hard/low state: page each VM out down to its target


def ksm_knobs(sc: Scenario, overrides: dict[str, int]) -> dict[str, int]:
    """KSM settings for the policy. With ``memtune.sharing = "ksm"`` (the model's KSM mode) its
    ``ksm.<knob>`` settings 1:1; with the ESX scanner (``tps``), the ESX scan rate (each VM in
    ``Mem.ShareScanTime``, at most ``Mem.ShareRateMax`` pages/s) as ``pages_to_scan`` per 20 ms."""
    s = sc.settings
    if s.get("memtune.sharing", "tps") == "ksm":
        knobs = {k[4:]: int(v) for k, v in s.items()
                 if k.startswith("ksm.") and k[4:] in ksm.KNOBS and k != "ksm.merge_across_nodes"}
    else:
        rate = sum(
            min(v.memory / PAGE / (s["Mem.ShareScanTime"] * 60.0), s["Mem.ShareRateMax"]) for v in sc.vms
        )
        knobs = {"pages_to_scan": max(1, round(rate * 0.020)), "sleep_millisecs": 20}
    knobs.setdefault("use_zero_pages", 0)
    knobs.setdefault("max_page_sharing", 256)
    return {**knobs, **overrides, "run": 1}


class LinuxDriver:
    """Runs a scenario on this host (root; see :func:`memtune.live.safety.preflight`)."""

    name = "linux"

    def __init__(self, options: LiveOptions | None = None, disable: tuple[str, ...] = ()) -> None:
        self.options = options or LiveOptions()
        self.disable = disable

    def run(self, scenario: Scenario, *, seed: int | None = None) -> dict[str, Any]:
        with host_lock(self.options.lock_timeout):
            preflight(self.options.force)
            with opened_state(self.options.state_path) as st:
                return _Run(st, scenario, seed, self.options, self.disable).execute()


class _Run:
    def __init__(
        self, st: HostState, sc: Scenario, seed: int | None, opt: LiveOptions, disable: tuple[str, ...]
    ) -> None:
        self.st, self.sc, self.opt = st, sc, opt
        self.model = build_host(sc, seed=seed, disable=disable)
        self.seed = self.model.seed
        names = set(self.model.pm.plugin_names())
        s = self.model.settings
        mode = str(s.get("memtune.sharing", "tps"))
        self.sharing = mode in names and not (mode == "ksm" and int(s.get("ksm.run", 1)) == 0)
        self.salted = mode == "tps"  # ESX salting; Linux KSM merges across all VMs
        self.compression = "compression" in names and bool(s["Mem.MemZipEnable"])
        self.swapping = "swap" in names
        self.controller = Controller(self.model.scenario.replace(settings=dict(s)), "balloon" in names)
        self.procs: list[subprocess.Popen] = []
        self.ctl: list[ControlBlock] = []
        self.lat: list[LatencyBlock] = []
        self.zram: str | None = None
        self.killed: set[int] = set()  # VMs whose worker the OOM killer took

    # --- set-up ----------------------------------------------------------------------------------
    def _dirs(self) -> None:
        self.run_dir = STATE_DIR / f"run-{os.getpid()}"
        self.swap_dir = Path(self.opt.swap_dir) / f"memtune-live-{os.getpid()}"
        for d in (self.run_dir, self.swap_dir):
            self.st.record("file", path=str(d))
            d.mkdir(parents=True)

    def _content(self) -> list[Path]:
        """Per VM: page keys, compressibility and the model's initially resident pages."""
        h = self.model
        pg = h.pages
        if self.sharing and self.salted:
            from memtune.plugins.tps import salt_scopes

            scope = salt_scopes(h)
        elif self.sharing:
            scope = np.zeros(h.nvm, dtype=np.int64)
        else:
            scope = np.arange(h.nvm, dtype=np.int64) + 1
        keys = (scope[pg.vm] << CONTENT_BITS) | pg.content
        zclass = canonical_classes(keys, pg.zclass)
        paths = []
        for v in range(h.nvm):
            sl = slice(int(pg.base[v]), int(pg.base[v] + pg.npages[v]))
            p = self.run_dir / f"vm{v}.npz"
            np.savez(p, keys=keys[sl], zclass=zclass[sl], resident=pg.state[sl] != FREE)
            paths.append(p)
        return paths

    def _mechanisms(self) -> None:
        total = sum(v.memory for v in self.sc.vms)
        if self.sharing:
            # ksmd starts with the run (``_start``), not while the workers write their content
            knobs = ksm_knobs(self.model.scenario.replace(settings=self.model.settings), self.opt.ksm)
            self.ksm_run = knobs.pop("run")
            ksm.configure(self.st, **knobs)
        if self.compression:
            self.zram = swap.add_zram(
                self.st, disksize=self._zram_disksize(), mem_limit=0, algorithm=self.opt.zram_algorithm
            )
        if self.swapping:
            swap.add_swap_file(self.st, self.swap_dir / "host.swap", total)

    def _zram_disksize(self) -> int:
        """zram's ``disksize`` caps the uncompressed bytes it holds (``mem_limit`` would fail writes
        instead of spilling to the next swap device). The model's cap, ``Mem.MemZipMaxPct`` of each
        VM's memory, is the cache's own memory: with ``memtune.compression = "zram"`` that many
        bytes hold cap x 4 KiB / (the VM's mean slot) of pages; with the ESX rule (pages of 2 KiB
        or less), at least twice the cap."""
        s = self.model.settings
        caps = np.array([v.memory for v in self.sc.vms], dtype=np.float64) * s["Mem.MemZipMaxPct"] / 100
        if s.get("memtune.compression", "esx") == "zram":
            from memtune.plugins.compression import zram_disksize

            orig = zram_disksize(self.model)         # the model's zram device, the same size
        else:
            orig = 2 * float(caps.sum())
        return max(int(orig), 1 << 20) // PAGE * PAGE

    def _cgroups(self) -> None:
        self.parent = cgroup.create_parent(self.st, self.sc.host.memory + 256 * 2**20 * len(self.sc.vms))
        self.groups = [cgroup.create_vm(self.st, self.parent, v.name) for v in self.sc.vms]

    def _spawn(self, content: list[Path]) -> None:
        run = {"mergeable": self.sharing, "seed": self.seed, "timed_per_s": self.opt.timed_per_s,
               "settings": self.model.settings}
        for v, g in enumerate(self.groups):
            paths = {"ctl": self.run_dir / f"vm{v}.ctl", "content": content[v],
                     "guest_swap": self.swap_dir / f"vm{v}.gswap",
                     "stats": self.run_dir / f"vm{v}.stats.json"}
            self.ctl.append(ControlBlock(paths["ctl"], create=True))
            if self.opt.observer is not None:
                paths["latency"] = self.run_dir / f"vm{v}.lat"
                self.lat.append(LatencyBlock(paths["latency"], create=True))
            p = start_worker(worker_config(self.sc, v, g, paths, run), self.run_dir, v)
            self.st.add_worker(p.pid)
            self.procs.append(p)

    def _wait_phase(self, phase: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(c["phase"] < phase for v, c in enumerate(self.ctl) if v not in self.killed):
            self._check_alive()
            if time.monotonic() > deadline:
                raise HostError(f"workers did not reach phase {phase} within {timeout:g} s")
            time.sleep(0.02)

    def _check_alive(self) -> None:
        """A worker the kernel's OOM killer took is a result (the VM is gone, as a QEMU process
        would be); any other early exit is an error."""
        for v, p in enumerate(self.procs):
            if p.poll() is None or self.ctl[v]["phase"] >= 4 or v in self.killed:
                continue
            if self.groups[v].oom_control().get("oom_kill", 0) > 0:
                self.killed.add(v)
                continue
            tail = (self.run_dir / f"vm{v}.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise HostError(
                f"worker for VM {self.sc.vms[v].name!r} exited ({p.returncode}): "
                f"{tail[0] if tail else 'no output'}"
            )

    def _limits(self) -> None:
        """Limits once each worker's own baseline (what it holds before the VM's memory) is known."""
        self.baseline = [g.usage() for g in self.groups]
        for vm, g, b in zip(self.sc.vms, self.groups, self.baseline, strict=True):
            if vm.limit is not None and vm.limit < vm.memory:
                g.set_limit(self.st, vm.limit + b)
        self.guard = guard_limited(self.groups, self.procs, self.ctl, self.sc.vms)   # wait, not killed
        c = self.controller
        first = int(c.capacity - RECLAIM_AT * c.min_free + sum(self.baseline)) // PAGE * PAGE
        self.limiter = LimitWriter(self.st, self.parent, first)

    def _set_parent_limit(self, zram_used: int, other: int) -> None:
        """The kernel reclaims at the parent's limit: the VMs' capacity minus what zram holds (zram
        is not charged to cgroups; the model counts its compression cache as host memory) minus
        ``RECLAIM_AT`` of minFree, so that the kernel swaps where ESX does, in the hard state;
        plus what the workers hold beyond the VMs' pages (``other``, measured each tick).

        The writer reclaims down to a limit below the usage (:mod:`memtune.live.limiter`, in its own
        thread); the limit goes at most ``LIMIT_STEP`` of the capacity below the usage at a time."""
        c = self.controller
        limit = int(c.capacity - zram_used - RECLAIM_AT * c.min_free + other)
        usage = self.parent.usage()
        self.limiter.post(max(limit, usage - int(LIMIT_STEP * c.capacity)) // PAGE * PAGE)

    # --- the run ---------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        try:
            return self._execute()
        finally:
            if hasattr(self, "limiter"):       # no write of this run's limit after it ends
                self.limiter.close(timeout=5.0)
            if getattr(self, "guard", None) is not None:
                self.guard.close()
            if self.sharing and hasattr(self, "ksm_run"):   # max_page_sharing is restored only unmerged
                ksm.stop_and_unmerge(self.st)

    def _execute(self) -> dict[str, Any]:
        self._dirs()
        content = self._content()
        self._mechanisms()
        self._cgroups()
        self._spawn(content)
        self._wait_phase(1, 60)
        self._limits()
        for c in self.ctl:
            c["go"] = GO_FILL
        self._wait_phase(2, 120)
        self.filled = {
            "real": host_sample(0.0, self.parent, self._regions(), self.zram).held,
            "model": (self.model.held() * self.model.page_bytes).tolist(),
            "zram": swap.zram_stats(self.zram)["mem_used_total"] if self.zram else 0,
        }
        if self.sharing:
            ksm.configure(self.st, run=self.ksm_run)
        t0 = time.monotonic_ns()
        for c in self.ctl:
            c["t0_ns"] = t0
            c["go"] = GO_RUN
        timeline = self._loop(t0)
        return self._finish(timeline)

    def _loop(self, t0: int) -> dict[str, list]:
        sc, tick = self.sc, self.sc.tick
        tl: dict[str, list] = {
            "t": [],
            "free": [],
            "state": [],
            "ballooned": [],
            "ksm_sharing": [],
            "ksm": [],                  # every KSM counter (memtune.live.ksm_rate fits ksmd's costs)
            "zram_orig": [],
            "swap_used": [],
        }
        self.warm: dict[str, Any] | None = None
        nxt, last = tick, 0.0
        while True:
            time.sleep(max(0.0, nxt - (time.monotonic_ns() - t0) / 1e9))
            now = (time.monotonic_ns() - t0) / 1e9
            self._check_alive()
            s = host_sample(now, self.parent, self._regions(), self.zram)
            self._set_parent_limit(s.zram_used, s.other)
            held = np.array(s.held, dtype=np.float64) / PAGE
            snap = [c.snapshot() for c in self.ctl]
            active = np.array([x["active_ppm"] / 1e6 for x in snap])
            allocated = np.array([x["allocated"] for x in snap], dtype=np.float64)
            before = self.controller.time_in_state.copy()
            balloon = self.controller.step(now - last, s.used, held, active, allocated)
            if now < sc.warmup:
                self.controller.time_in_state[:] = before
            elif self.warm is None:
                self.warm = self._counters()
            for c, vm, b in zip(self.ctl, sc.vms, balloon, strict=True):
                c["balloon"] = (
                    int(self.opt.balloon[vm.name] // PAGE) if vm.name in self.opt.balloon else int(b)
                )
            self._host_reclaim(held, s)
            self._observe(now, s, snap)
            tl["t"].append(now)
            tl["free"].append(float(self.controller.capacity - s.used))
            tl["state"].append(self.controller.state.label)
            tl["ballooned"].append(float(sum(x["ballooned"] for x in snap) * PAGE))
            tl["ksm_sharing"].append(s.ksm.get("pages_sharing", 0) * PAGE)
            tl["ksm"].append(dict(s.ksm))
            tl["zram_orig"].append(s.zram.get("orig_data_size", 0))
            tl["swap_used"].append(s.swaps.get(str(self.swap_dir / "host.swap"), {}).get("used", 0))
            last = now
            if now >= sc.duration - 1e-9:
                return tl
            nxt = min(nxt + tick, sc.duration)

    def _host_reclaim(self, held: np.ndarray, s: Any) -> None:
        """ESX's hard and low states swap and compress each VM down to its allocation target (the
        model's ``memtune_reclaim``: every page above target, each tick; a VM holds its compressed
        pages' cache too). The driver asks each such worker to page that many out with
        ``MADV_PAGEOUT`` (kernel swap: zram, then the swap file), cold pages first; the parent's limit
        stays as the kernel's backstop. Without it the kernel reclaimed at the parent's limit, across
        all VMs by its LRU and only as far as the limit, and the host did not get back out of the low
        state (small, esxi-default, seed 1: 26 s of 26 in low, no balloon)."""
        c = self.controller
        if not self.opt.host_reclaim or c.state < MemState.HARD or not (self.swapping or self.compression):
            return
        need = np.floor(held + zram_share(self.groups, s, str(self.swap_dir / "host.swap")) / PAGE - c.target)
        for v in np.flatnonzero(need >= 1):
            if v in self.killed:
                continue
            self.ctl[v]["reclaim"] = int(need[v])
            self.ctl[v]["reclaim_seq"] = self.ctl[v]["reclaim_seq"] + 1

    def _observe(self, now: float, s: Any, snap: list[dict[str, int]]) -> None:
        """Hand the tick to the observer (the metrics exporter), if any; it only reads."""
        obs = self.opt.observer
        if obs is None:
            return
        from memtune.live.observe import RunInfo, TickView

        if not hasattr(self, "_observing"):
            mode = str(self.model.settings.get("memtune.sharing", "tps")) if self.sharing else None
            obs.start(RunInfo(self.model, self.controller, list(self.baseline), mode, self.zram,
                              str(self.swap_dir / "host.swap") if self.swapping else None))
            self._observing = True
        obs.tick(TickView(now, s, snap, [vm_counters(g) for g in self.groups],
                          [b.read() for b in self.lat], set(self.killed)))

    def _regions(self) -> list[tuple[int, int]]:
        return [
            (0, 0) if v in self.killed else (p.pid, c["resident"])
            for v, (p, c) in enumerate(zip(self.procs, self.ctl, strict=True))
        ]

    def _counters(self) -> dict[str, Any]:
        return {
            "vms": [vm_counters(g) for g in self.groups],
            "guest_swap_ins": [c["guest_swap_ins"] for c in self.ctl],
        }

    def _finish(self, timeline: dict[str, list]) -> dict[str, Any]:
        end = self._counters()
        s = host_sample(self.sc.duration, self.parent, self._regions(), self.zram)
        snap = [c.snapshot() for c in self.ctl]
        self._wait_phase(4, 30)
        for c in self.ctl:
            c["go"] = GO_STOP
        for p in self.procs:
            p.wait(30)
        stats = [read_stats(self.run_dir / f"vm{v}.stats.json") for v in range(len(self.ctl))]
        warm = self.warm or end
        names = [vm.name for vm in self.sc.vms]
        vms, faults = vm_rows(names, stats, snap, warm, end, self.baseline, s.held)
        final = final_amounts(s, snap, str(self.swap_dir / "host.swap"))
        tis = {STATE_NAMES[i]: float(t) for i, t in enumerate(self.controller.time_in_state)}
        figures = live_figures(final, stats, faults, tis)
        figures["oom_killed"] = sorted(self.sc.vms[v].name for v in self.killed)
        waits = self.guard.rescues if self.guard is not None else {}
        figures["limit_waits"] = {self.sc.vms[v].name: n for v, n in waits.items()}   # oomguard
        host = {"ksm": s.ksm, "zram": s.zram, "swaps": s.swaps, "baseline": sum(self.baseline),
                "capacity": self.controller.capacity, "min_free": self.controller.min_free,
                "filled": self.filled, "counters": {"warm": warm, "end": end},
                "limit_busy": self.limiter.busy,
                "ksm_settings": {k: v for k, v in self.model.settings.items()
                                 if "ksm" in k or k == "memtune.sharing"}}
        return {"driver": "linux", "scenario": self.sc.name, "seed": self.seed, "figures": figures,
                "vms": vms, "timeline": timeline, "host": host}
