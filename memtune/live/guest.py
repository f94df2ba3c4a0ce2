"""A worker's guest memory: the VM's pages in one anonymous mapping, its balloon and guest swap.

Rules (ESX's balloon driver as in Waldspurger 2002, section 3.2; virtio-balloon likewise): the
balloon takes guest-free pages first (ranks at or above what the guest has allocated); beyond
those the guest must free pages it uses, so it pages its coldest ones out to its own swap file
(a real file, written and dropped from the page cache) and gives their frames up with
``madvise(MADV_DONTNEED)``. A touch of a paged-out page reads it back with ``O_DIRECT`` (a real
disk read, timed). A page never touched yet is written with its content on first touch, as the
guest writes its data.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time

import numpy as np

from memtune.live.content import PAGE, fill
from memtune.live.cpuwait import RunDelay

MLOCK_ONFAULT = 1     # mlock2(2): lock pages as they are faulted in
MADV_PAGEOUT = 21     # madvise(2), Linux 5.4+: reclaim these pages now (to swap: zram, then the swap file)
WRITE_TRIES = 200     # a guest swap write retried while the VM's cgroup is at its limit
CHUNK = 64            # pages filled per numpy call (small: the temporaries count against the VM's limit)


class GuestMemory:
    def __init__(self, npages: int, keys: np.ndarray, zclass: np.ndarray, mergeable: bool,
                 swap_path: str, locked: int = 0) -> None:
        self.n = npages
        self.keys = keys
        self.zclass = zclass
        self.region = mmap.mmap(-1, npages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.region.madvise(mmap.MADV_NOHUGEPAGE)      # stable results: no THP in workers
        if mergeable:
            self.region.madvise(mmap.MADV_MERGEABLE)
        self.flat = np.frombuffer(self.region, dtype=np.uint8)
        self.pages = self.flat.reshape(npages, PAGE)
        self.view = memoryview(self.region)
        self.backed = np.zeros(npages, dtype=bool)
        self.swapped = np.zeros(npages, dtype=bool)     # data in the guest's swap file
        self.balloon = 0                                # frames the balloon holds
        self.free_taken = 0                             # of which guest-free pages it released
        self.swap_fd = os.open(swap_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self.direct_fd = os.open(swap_path, os.O_RDONLY | os.O_DIRECT)
            self.write_fd = os.open(swap_path, os.O_WRONLY | os.O_DIRECT)
        except OSError:
            self.direct_fd = os.open(swap_path, os.O_RDONLY)
            self.write_fd = self.swap_fd
        self._abuf = mmap.mmap(-1, PAGE)                # page-aligned buffer for O_DIRECT
        self.swap_ins = self.swap_outs = self.first_touches = 0
        self.host_paged = 0                             # pages paged out for the host (hard/low state)
        self.run_delay = RunDelay()
        self.cpu_wait = 0.0                             # seconds waited for a CPU, kept out of latency
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._vec = (ctypes.c_ubyte * npages)()
        self._addr = ctypes.addressof(ctypes.c_char.from_buffer(self.region))
        self.locked = self._lock(min(int(locked), npages))

    def _lock(self, pages: int) -> int:
        """The reservation: ``mlock2(MLOCK_ONFAULT)`` on the first (hottest) ``pages`` ranks, so the
        kernel never reclaims them once touched (QEMU's ``-overcommit mem-lock`` locks all guest
        memory the same way); the balloon and the guest's page-out leave them alone."""
        if pages <= 0:
            return 0
        if self._libc.mlock2(ctypes.c_void_p(self._addr), ctypes.c_size_t(pages * PAGE), MLOCK_ONFAULT) != 0:
            raise OSError(ctypes.get_errno(), f"mlock2 of {pages} pages: {os.strerror(ctypes.get_errno())}")
        return pages

    def resident(self) -> int:
        """Pages of the VM's memory in RAM now (``mincore(2)``; KSM-merged pages included)."""
        mask = self.resident_mask()
        return -1 if mask is None else int(mask.sum())

    def resident_mask(self) -> np.ndarray | None:
        if self._libc.mincore(ctypes.c_void_p(self._addr), ctypes.c_size_t(self.n * PAGE), self._vec) != 0:
            return None
        return (np.frombuffer(self._vec, dtype=np.uint8) & 1).astype(bool)

    # --- the host's page-out (ESX hard state) ----------------------------------------------------
    def host_victims(self, need: int, allocated: int, coldness: np.ndarray,
                     resident: np.ndarray) -> np.ndarray:
        """Up to ``need`` ranks, sorted: resident guest-free pages, then resident in-use pages in
        ``coldness`` order (coldest first); never a locked (reservation) page."""
        ok = resident & self.backed
        ok[:self.locked] = False
        start = max(allocated, self.locked)
        victims = start + np.flatnonzero(ok[start:])
        if victims.size < need:
            cold = coldness[ok[coldness]]
            victims = np.concatenate([victims, cold[:need - victims.size]])
        return np.sort(victims[:need])

    def host_page_out(self, need: int, allocated: int, coldness: np.ndarray) -> int:
        """The hypervisor pages ``need`` of this VM's resident pages out (the guest is not asked):
        guest-free pages first, then the coldest in use (``memtune.host_victims = "cold"``, as a Linux
        host's LRU would), never the reservation's locked pages. ``madvise(MADV_PAGEOUT)`` hands them
        to the kernel's swap (zram first, then the swap file). Returns the pages asked for."""
        mask = self.resident_mask()
        if need <= 0 or mask is None:
            return 0
        victims = self.host_victims(need, allocated, coldness, mask)
        if victims.size == 0:
            return 0
        # one madvise per run of consecutive pages
        cuts = np.flatnonzero(np.diff(victims) != 1) + 1
        for run in np.split(victims, cuts):
            self._libc.madvise(ctypes.c_void_p(self._addr + int(run[0]) * PAGE),
                               ctypes.c_size_t(run.size * PAGE), MADV_PAGEOUT)
        self.host_paged += victims.size
        return int(victims.size)

    # --- content ---------------------------------------------------------------------------------
    def write_content(self, ranks: np.ndarray) -> None:
        """Write each page's model content (a first touch by the guest)."""
        for i in range(0, ranks.size, CHUNK):
            r = ranks[i:i + CHUNK]
            buf = np.empty((r.size, PAGE), dtype=np.uint8)
            fill(buf, self.keys[r], self.zclass[r])
            self.pages[r] = buf
        self.backed[ranks] = True

    def first_touch(self, ranks: np.ndarray) -> tuple[int, float]:
        """Fill pages touched for the first time; (count, seconds it took)."""
        new = np.unique(ranks[~self.backed[ranks] & ~self.swapped[ranks]])
        if new.size == 0:
            return 0, 0.0
        d0, t0 = self.run_delay.ns(), time.perf_counter()
        self.write_content(new)
        secs, wait = time.perf_counter() - t0, (self.run_delay.ns() - d0) * 1e-9
        self.cpu_wait += min(wait, secs)
        self.first_touches += new.size
        return int(new.size), max(secs - wait, 0.0)

    # --- guest swap ------------------------------------------------------------------------------
    def swap_in(self, ranks: np.ndarray) -> np.ndarray:
        """Read paged-out pages back from the guest swap file; latency of each (seconds), without
        the time the thread then waited for a CPU (:mod:`memtune.live.cpuwait`)."""
        todo = np.unique(ranks[self.swapped[ranks]])
        lat = np.empty(todo.size)
        rd = self.run_delay.ns
        for i, r in enumerate(todo.tolist()):
            d0, t0 = rd(), time.perf_counter()
            os.preadv(self.direct_fd, [self._abuf], r * PAGE)
            self.view[r * PAGE:(r + 1) * PAGE] = self._abuf
            secs, wait = time.perf_counter() - t0, (rd() - d0) * 1e-9
            self.cpu_wait += min(wait, secs)
            lat[i] = max(secs - wait, 0.0)
        self.swapped[todo] = False
        self.backed[todo] = True
        self.swap_ins += todo.size
        return lat

    def _swap_out(self, ranks: np.ndarray) -> None:
        """The guest writes the pages to its swap file with ``O_DIRECT`` from its own memory, as a
        guest's disk write goes from guest memory to the virtual disk: no page cache is charged to
        the VM's cgroup, whose limit is the VM's."""
        for r in ranks.tolist():
            self._write_page(r)
        os.fdatasync(self.swap_fd)
        os.posix_fadvise(self.swap_fd, 0, 0, os.POSIX_FADV_DONTNEED)
        self._release(ranks)
        self.swapped[ranks] = True
        self.swap_outs += ranks.size

    def _write_page(self, r: int) -> None:
        """One page to the swap file. The page is read first (a user fault, which at the VM's limit
        waits for the host's page-out: :mod:`memtune.live.oomguard`); a write whose page was
        reclaimed again meanwhile fails to pin it (``EFAULT``/``ENOMEM`` at the limit) and is retried."""
        page = self.view[r * PAGE:(r + 1) * PAGE]
        for attempt in range(WRITE_TRIES):
            self.flat[r * PAGE]                          # fault the page in (user fault)
            try:
                os.pwrite(self.write_fd, page, r * PAGE)
                return
            except OSError as exc:
                if exc.errno not in (errno.EFAULT, errno.ENOMEM) or attempt == WRITE_TRIES - 1:
                    raise
                time.sleep(0.001)

    def _release(self, ranks: np.ndarray) -> None:
        for r in ranks.tolist():
            self.region.madvise(mmap.MADV_DONTNEED, r * PAGE, PAGE)
        self.backed[ranks] = False

    # --- balloon ---------------------------------------------------------------------------------
    def _deficit(self, allocated: int) -> int:
        return self.balloon - self.free_taken - int(self.swapped[:allocated].sum())

    def set_balloon(self, target: int, allocated: int, coldness: np.ndarray | None) -> None:
        """Hold ``target`` frames: guest-free pages that hold memory first, then page out the coldest
        in-use pages (as the model's balloon: a free page that was never backed frees nothing).

        ``coldness`` orders ranks [0, allocated) coldest first (needed only when paging out)."""
        self.balloon = max(0, min(int(target), self.n))
        self.free_taken = min(self.free_taken, self.balloon, self.n - allocated)
        need = self._deficit(allocated)
        if need <= 0:
            return
        start = max(allocated, self.locked)
        free_backed = start + np.flatnonzero(self.backed[start:])
        if free_backed.size:
            take = free_backed[:need]
            self._release(take)
            self.free_taken += take.size
            need -= take.size
        if need <= 0 or coldness is None:
            return
        order = coldness[self.backed[coldness] & (coldness >= self.locked)]
        self._swap_out(np.sort(order[:need]))

    def needs_coldness(self, allocated: int) -> bool:
        return self._deficit(allocated) - int(self.backed[max(allocated, self.locked):].sum()) > 0
