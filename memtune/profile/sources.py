"""Where page contents come from: raw memory images and live processes.

A *source* yields its pages in chunks: a ``(n, 4096)`` uint8 numpy array per chunk (a view into a
reused buffer, valid until the next chunk). Two kinds exist:

- :class:`ImageSource`: a file of concatenated 4 KiB pages (a guest memory dump, ``/dev/shm`` file,
  the output of ``virsh dump --memory-only --format=raw`` ...). A trailing partial page is ignored
  and reported as ``tail_bytes``.
- :class:`ProcessSource`: a live process through ``/proc/PID/maps`` (which ranges exist),
  ``/proc/PID/pagemap`` (which pages are present in RAM or swapped out; never-touched pages are not
  memory and are skipped) and ``/proc/PID/mem`` (their contents). Private and shared mappings, anonymous
  and file-backed, are all read; ranges the kernel refuses to read (``[vvar]``) are skipped and
  counted. Reading needs ptrace access to the process (same user, or root; see
  ``/proc/sys/kernel/yama/ptrace_scope``).

Errors the user can fix (no such file or process, no permission) raise :class:`UserError` naming the
source, so the CLI prints one line.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from memtune.errors import UserError

PAGE = 4096                      # x86-64 / arm64 base page, the unit ESX TPS and KSM compare
CHUNK_PAGES = 4096               # 16 MiB per read: large enough for sequential I/O, fits in L2/L3 sweeps
_PAGEMAP_WINDOW = 1 << 16        # pagemap entries read at once (512 KiB of entries, 256 MiB of address space)
_PM_PRESENT = np.uint64(1 << 63)  # Documentation/admin-guide/mm/pagemap.rst: bit 63 page present
_PM_SWAP = np.uint64(1 << 62)     # bit 62 page swapped
_PM_FILE = np.uint64(1 << 61)     # bit 61 page is file-page or shared-anon
_UNREADABLE = {"[vvar]", "[vvar_vclock]", "[vsyscall]"}


def _oserror(exc: OSError, source: str, what: str) -> UserError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        reason += (" (reading a process needs ptrace access: root, or its owner when "
                   "kernel.yama.ptrace_scope allows)") if what == "process" else ""
    return UserError(f"cannot read {what}: {reason}", source=source)


@dataclass
class SourceInfo:
    """What was read from one source, besides its pages."""

    name: str
    kind: str                       # "image" or "process"
    location: str                   # path, or /proc/PID
    details: dict = field(default_factory=dict)


def _device_size(path: str) -> int:
    """Bytes of a block device (its end, found by seeking)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise _oserror(exc, path, "image") from None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class ImageSource:
    """A raw memory image: a file of concatenated 4 KiB pages."""

    kind = "image"

    def __init__(self, path: str, name: str | None = None) -> None:
        self.path = str(path)
        self.name = name or os.path.basename(self.path.rstrip("/")) or self.path
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise _oserror(exc, self.path, "image") from None
        if stat.S_ISDIR(st.st_mode):
            raise UserError("cannot read image: is a directory", source=self.path)
        if stat.S_ISREG(st.st_mode):
            self.size = st.st_size
        elif stat.S_ISBLK(st.st_mode):
            self.size = _device_size(self.path)
        else:
            # a character device (/dev/zero), FIFO or socket has no end: profiling it would never finish
            raise UserError("cannot read image: not a regular file or block device (no known size)",
                            source=self.path)
        self.info = SourceInfo(self.name, self.kind, self.path, {"bytes": int(self.size)})

    def chunks(self, chunk_pages: int = CHUNK_PAGES) -> Iterator[np.ndarray]:
        """The image's pages, ``chunk_pages`` at a time."""
        try:
            f = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed in finally
        except OSError as exc:
            raise _oserror(exc, self.path, "image") from None
        buf = np.empty(chunk_pages * PAGE, dtype=np.uint8)
        mv = memoryview(buf)
        total = 0
        try:
            while True:
                got = 0
                want = min(buf.size, self.size - total)    # never past the size seen when opened
                while got < want:
                    try:
                        n = f.readinto(mv[got:want])
                    except OSError as exc:
                        raise _oserror(exc, self.path, "image") from None
                    if not n:
                        break
                    got += n
                total += got
                pages = got // PAGE
                if pages:
                    yield buf[: pages * PAGE].reshape(pages, PAGE)
                if got < buf.size or total >= self.size:
                    self.info.details["tail_bytes"] = got - pages * PAGE
                    break
        finally:
            f.close()
        self.info.details["bytes_read"] = total


def parse_maps(text: str) -> list[tuple[int, int, str, str]]:
    """``(start, end, perms, name)`` for each line of ``/proc/PID/maps``."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


class ProcessSource:
    """A live process: the present (or swapped) pages of its readable mappings."""

    kind = "process"

    def __init__(self, pid: int, name: str | None = None) -> None:
        self.pid = int(pid)
        self.location = f"/proc/{self.pid}"
        try:
            with open(f"{self.location}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except FileNotFoundError:
            raise UserError("no such process", source=f"pid {self.pid}") from None
        except OSError as exc:
            raise _oserror(exc, f"pid {self.pid}", "process") from None
        try:
            with open(f"{self.location}/maps") as f:
                self.maps = parse_maps(f.read())
        except FileNotFoundError:
            raise UserError("no such process", source=f"pid {self.pid}") from None
        except OSError as exc:
            raise _oserror(exc, f"pid {self.pid}", "process") from None
        try:
            fd = os.open(f"{self.location}/mem", os.O_RDONLY)
        except OSError as exc:
            raise _oserror(exc, f"pid {self.pid}", "process") from None
        os.close(fd)
        self.name = name or f"pid{self.pid}"
        self.info = SourceInfo(self.name, self.kind, self.location,
                               {"pid": self.pid, "cmdline": cmd[:200]})

    def chunks(self, chunk_pages: int = CHUNK_PAGES) -> Iterator[np.ndarray]:
        """Contents of present pages, ``chunk_pages`` at a time (a page that vanished in between
        is skipped and counted)."""
        src = f"pid {self.pid}"
        try:
            pm_fd = os.open(f"{self.location}/pagemap", os.O_RDONLY)
            mem_fd = os.open(f"{self.location}/mem", os.O_RDONLY)
        except FileNotFoundError:
            raise UserError("process exited while being read", source=src) from None
        except OSError as exc:
            raise _oserror(exc, src, "process") from None
        counts = _ReadCounts()
        try:
            yield from _read_runs(mem_fd, _present_runs(pm_fd, self.maps, counts), chunk_pages, counts)
        finally:
            os.close(pm_fd)
            os.close(mem_fd)
        self.info.details.update(
            file_backed_pages=counts.file_pages,
            swapped_pages=counts.swapped,
            unreadable_pages=counts.skipped_pages,
            unreadable_ranges=counts.skipped_ranges,
        )


@dataclass
class _ReadCounts:
    """What reading a process met besides page contents (reported in the source's details)."""

    file_pages: int = 0               # present pages of file mappings or shared anonymous memory
    swapped: int = 0                  # pages swapped out (read back through /proc/PID/mem)
    skipped_pages: int = 0            # pages /proc/PID/mem would not give (vanished in between)
    skipped_ranges: int = 0           # ranges whose pagemap the kernel refused


def _present_runs(pm_fd: int, maps: list, counts: _ReadCounts) -> Iterator[tuple[int, int]]:
    """(address, pages) of each run of present or swapped pages of the readable mappings, from
    ``/proc/PID/pagemap`` read ``_PAGEMAP_WINDOW`` entries at a time (bits 63, 62, 61:
    Documentation/admin-guide/mm/pagemap.rst)."""
    for lo, hi, perms, name in maps:
        if perms[0] != "r" or name in _UNREADABLE:
            continue
        first = lo // PAGE
        npages = (hi - lo) // PAGE
        for w0 in range(0, npages, _PAGEMAP_WINDOW):
            wn = min(_PAGEMAP_WINDOW, npages - w0)
            try:
                raw = os.pread(pm_fd, wn * 8, (first + w0) * 8)
            except OSError:
                counts.skipped_ranges += 1
                break
            pm = np.frombuffer(raw, dtype=np.uint64)
            present = (pm & (_PM_PRESENT | _PM_SWAP)) != 0
            if not present.any():
                continue
            counts.file_pages += int(np.count_nonzero(present & ((pm & _PM_FILE) != 0)))
            counts.swapped += int(np.count_nonzero((pm & _PM_SWAP) != 0))
            edges = np.diff(np.concatenate(([0], present.view(np.int8), [0])))
            starts = np.flatnonzero(edges == 1)
            ends = np.flatnonzero(edges == -1)
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                yield lo + (w0 + s) * PAGE, e - s


def _read_runs(
    mem_fd: int, runs: Iterator[tuple[int, int]], chunk_pages: int, counts: _ReadCounts
) -> Iterator[np.ndarray]:
    """The contents of the runs' pages from ``/proc/PID/mem`` into one reused buffer, yielded
    whenever it holds ``chunk_pages`` (and the rest at the end); pages it would not give are
    skipped and counted."""
    buf = np.empty(chunk_pages * PAGE, dtype=np.uint8)
    mv = memoryview(buf)
    fill = 0
    for start, n in runs:
        p = 0
        while p < n:
            take = min(n - p, chunk_pages - fill)
            try:
                got = os.preadv(mem_fd, [mv[fill * PAGE:(fill + take) * PAGE]], start + p * PAGE)
            except OSError:
                got = 0
            whole = got // PAGE
            if whole < take:
                counts.skipped_pages += take - whole
            fill += whole
            p += take
            if fill == chunk_pages:
                yield buf.reshape(chunk_pages, PAGE)
                fill = 0
    if fill:
        yield buf[: fill * PAGE].reshape(fill, PAGE)
