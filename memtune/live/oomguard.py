"""A VM at its limit waits for the hypervisor's swap instead of being killed.

ESX never kills a VM for its limit: above it the VMkernel swaps the VM's pages to its ``.vswp``
file while the VM waits (vSphere Resource Management, "Memory Limit" and "Swap Space"). Linux's
memory cgroup instead calls its OOM killer when reclaim at ``memory.limit_in_bytes`` makes no
progress in ``MAX_RECLAIM_RETRIES`` rounds, which it does for a VM whose memory is mostly locked
(the reservation) and the rest hot (``inactive_anon`` 0). So each limited
VM's cgroup gets ``oom_kill_disable 1`` (cgroup-v1/memory.rst, section 10: a task at the limit then
sleeps in the cgroup's OOM wait queue) and this thread, watching ``under_oom``, pages the VM's
coldest unlocked pages out with ``process_madvise(MADV_PAGEOUT)`` (the hypervisor swapping the
VM) until the cgroup has room: the VM stalls, as under ESX, and the stall is its touches' latency.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from memtune.live.cgroup import Group
from memtune.live.content import PAGE
from memtune.live.guest import MADV_PAGEOUT

SYS_PROCESS_MADVISE = 440        # x86_64 (include/uapi/asm-generic/unistd.h: 440 on all arches)
POLL = 0.005                     # seconds between looks at ``under_oom``
CHUNK = 64                       # pages paged out per step, coldest (highest rank) first
ROOM = 16                        # pages of room the cgroup is given back before the VM goes on


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def under_oom(group: Group) -> bool:
    return group.oom_control().get("under_oom") == 1


class OomGuard:
    """Watches the limited VMs: ``vms`` maps a VM index to (group, pid, region address, pages,
    locked pages). ``rescues[v]`` counts the times VM ``v`` waited at its limit."""

    def __init__(self, vms: dict[int, tuple[Group, int, int, int, int]]) -> None:
        self.vms = vms
        self.rescues = dict.fromkeys(vms, 0)
        self.given_up: set[int] = set()          # VMs handed back to the kernel's OOM killer
        self.pending: dict[Path, int] = {}       # limit files to write back (path -> limit)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.limits = {v: int((g.v1 / "memory.limit_in_bytes").read_text()) for v, (g, *_r) in vms.items()}
        self._pidfd = {v: os.pidfd_open(pid) for v, (_, pid, *_rest) in vms.items()}
        for g, *_ in vms.values():
            (g.v1 / "memory.oom_control").write_text("1\n")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memtune-oom-guard", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            for path, limit in list(self.pending.items()):
                del self.pending[path]
                self._restore_limit(path, limit)
            for v, (group, _pid, addr, n, locked) in list(self.vms.items()):
                try:
                    if under_oom(group):
                        self._rescue(v, group, addr, n, locked)
                except OSError:                 # the group or the worker is gone: the run ends
                    continue

    def _rescue(self, v: int, group: Group, addr: int, n: int, locked: int) -> None:
        """Page out from the top rank down, ``CHUNK`` at a time, until ``ROOM`` pages are free, then let
        the VM go on (a charge that fails its 64-page batch retries for the pages it needs). When every
        unlocked page was asked and not one page is free (what the worker holds beyond the VM's pages
        fills the limit), the kernel's OOM killer decides again, and a kill is a figure."""
        self.rescues[v] += 1
        limit = self.limits[v]
        top = n
        while limit - group.usage() < ROOM * PAGE and top > locked:
            lo = max(locked, top - CHUNK)
            iov = _IoVec(addr + lo * PAGE, (top - lo) * PAGE)
            if self._libc.syscall(SYS_PROCESS_MADVISE, self._pidfd[v], ctypes.byref(iov), 1,
                                  MADV_PAGEOUT, 0) < 0:
                break
            top = lo
        if limit - group.usage() < PAGE:
            (group.v1 / "memory.oom_control").write_text("0\n")
            self.given_up.add(v)
            del self.vms[v]
            return
        # wake the waiters: a page swapped out uncharges the cgroup without waking its OOM wait
        # queue; a larger limit does (mem_cgroup_resize_max). Writing 0 to oom_kill_disable would
        # too, but a waiter that runs before the 1 is written back is killed. The limit goes back
        # at once (now above the usage, so no reclaim; if refused, at the next look)
        path = group.v1 / "memory.limit_in_bytes"
        path.write_text(f"{limit + PAGE}\n")
        self._restore_limit(path, limit)

    def _restore_limit(self, path: Path, limit: int) -> None:
        try:
            path.write_text(f"{limit}\n")
        except OSError:                         # EBUSY: the VM took the page meanwhile
            self.pending[path] = limit

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        for fd in self._pidfd.values():
            os.close(fd)


def guard_limited(groups: list[Group], procs: list, ctl: list, vms: list) -> OomGuard | None:
    """An :class:`OomGuard` for the VMs with a limit below their memory (None if there are none)."""
    watched = {
        v: (groups[v], procs[v].pid, int(ctl[v]["region"]), vm.memory // PAGE, vm.reservation // PAGE)
        for v, vm in enumerate(vms)
        if vm.limit is not None and vm.limit < vm.memory and (groups[v].v1 / "memory.oom_control").exists()
    }
    return OomGuard(watched) if watched else None
