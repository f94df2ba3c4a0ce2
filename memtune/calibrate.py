"""Measure on this machine the costs the latency model charges, and write them as scenario settings.

What is measured (4 KiB pages; CPU costs are the fastest of repeated runs, each over thousands of
pages, because slower runs measure other processes; device reads keep their distribution)
    ``fault_anon``     first write to a fresh anonymous page (``mmap`` + touch, transparent huge
                       pages off): a minor fault, page allocation and zeroing -> ``latency.page_alloc``
    ``cow_fault``      first write to a page of a private file mapping that was read before: a
                       copy-on-write fault with a new page and a 4 KiB copy -> ``latency.cow_break``
    ``copy_4k``        4 KiB memcpy from bulk copy bandwidth (informational, part of the COW cost)
    ``lz4`` / ``zstd`` decompressing one 4 KiB page of real text (Python sources on this machine)
                       that compressed to <= 2 KiB, minus the Python call overhead measured on an
                       empty call; ``latency.decompress`` = ``fault_anon`` + ``lz4`` (a touch of a
                       compressed page faults, gets a page and decompresses into it)
    ``device_read``    4 KiB random reads of a file on ``--device`` with ``O_DIRECT`` (no page
                       cache); where ``O_DIRECT`` is refused (tmpfs, some overlay file systems) the
                       page cache is dropped for the file before each read (``POSIX_FADV_DONTNEED``)
                       and a note says so. ``latency.swap_in_<role>`` = mean read + ``fault_anon``.

These are native costs. A guest's fault in a VM adds a VM exit (~1 us on current CPUs), which the
model's defaults include; the file's comments say which numbers were measured and how.

Only settings some loaded plugin registers are written: a name no plugin declares would make the
scenario invalid, so it is reported instead.
"""

from __future__ import annotations

import contextlib
import glob
import mmap
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memtune.errors import UserError

PAGE = 4096
ROLES = {
    "host-cache": "latency.swap_in_host_cache",
    "ssd": "latency.swap_in_ssd",
    "hdd": "latency.swap_in_hdd",
}


@dataclass
class Calibration:
    """Measured costs (seconds per 4 KiB page) and notes on how they were obtained."""

    measured: dict[str, float] = field(default_factory=dict)
    settings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _best_time(fn: Callable[[], float], repeats: int) -> float:
    """The fastest of ``repeats`` runs: slower runs measure other processes sharing the CPU
    (the advice of Python's ``timeit``)."""
    return min(fn() for _ in range(repeats))


def _no_thp(m: mmap.mmap) -> None:
    adv = getattr(mmap, "MADV_NOHUGEPAGE", None)
    if adv is not None:
        with contextlib.suppress(OSError):
            m.madvise(adv)


def measure_fault_anon(pages: int = 4096, repeats: int = 5) -> float:
    """Seconds per first write to a fresh anonymous 4 KiB page."""

    def once() -> float:
        m = mmap.mmap(-1, pages * PAGE)
        _no_thp(m)
        a = np.frombuffer(m, dtype=np.uint8)
        t = time.perf_counter()
        a[::PAGE] = 1
        dt = time.perf_counter() - t
        del a
        m.close()
        return dt / pages

    return _best_time(once, repeats)


def measure_cow_fault(folder: str | None = None, pages: int = 4096, repeats: int = 5) -> float:
    """Seconds per write to a read-mapped page of a private file mapping (copy-on-write break)."""
    with tempfile.TemporaryFile(dir=folder) as f:
        f.write(np.random.default_rng(0).bytes(pages * PAGE))
        f.flush()

        def once() -> float:
            m = mmap.mmap(
                f.fileno(), pages * PAGE, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
            _no_thp(m)
            a = np.frombuffer(m, dtype=np.uint8)
            int(a[::PAGE].sum())  # map every page read-only (shared with the page cache)
            t = time.perf_counter()
            a[::PAGE] = 1  # each write breaks the sharing: fault + new page + copy
            dt = time.perf_counter() - t
            del a
            m.close()
            return dt / pages

        return _best_time(once, repeats)


def measure_copy_4k(mib: int = 64, repeats: int = 5) -> float:
    """Seconds per 4 KiB of memcpy, from a bulk copy (cache-cold)."""
    src = np.ones(mib << 20, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)

    def once() -> float:
        t = time.perf_counter()
        np.copyto(dst, src)
        return (time.perf_counter() - t) / (src.size / PAGE)

    return _best_time(once, repeats)


def text_pages(limit: int = 2000) -> list[bytes]:
    """4 KiB pages of Python sources on this machine (compressible, like guest text and data)."""
    out: list[bytes] = []
    for path in sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True)):
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        out += [data[i : i + PAGE] for i in range(0, len(data) - PAGE + 1, PAGE)]
        if len(out) >= limit:
            return out[:limit]
    if not out:
        out = [(b"memtune calibration text page %d " % i) * 128 for i in range(limit)]
        out = [p[:PAGE] for p in out]
    return out


def measure_decompress(pages: list[bytes], repeats: int = 5) -> dict[str, float]:
    """Seconds per 4 KiB decompression (pages that compress to <= 2 KiB), lz4 and zstd."""
    import lz4.block
    import zstandard

    zc = zstandard.ZstdCompressor(level=3)
    zd = zstandard.ZstdDecompressor()
    lz = [c for c in (lz4.block.compress(p, store_size=False) for p in pages) if len(c) <= 2048]
    zs = [c for c in (zc.compress(p) for p in pages) if len(c) <= 2048]
    if not lz or not zs:
        raise UserError("no page of the calibration text compresses to 2 KiB")
    dec_lz, dec_zs = lz4.block.decompress, zd.decompress

    def loop(fn: Callable[[bytes], Any], data: list[bytes]) -> Callable[[], float]:
        def once() -> float:
            t = time.perf_counter()
            for c in data:
                fn(c)
            return (time.perf_counter() - t) / len(data)

        return once

    empty = _best_time(loop(len, lz), repeats)  # Python loop + call overhead
    return {
        "lz4": max(0.0, _best_time(loop(lambda c: dec_lz(c, uncompressed_size=PAGE), lz), repeats) - empty),
        "zstd": max(0.0, _best_time(loop(lambda c: dec_zs(c, max_output_size=PAGE), zs), repeats) - empty),
        "call_overhead": empty,
    }


def measure_device_read(
    path: str, reads: int = 500, file_mib: int = 64, seed: int = 0
) -> tuple[list[float], str]:
    """Per-read seconds of 4 KiB random reads on ``path`` (a directory: a scratch file is made
    there; a file or block device: read as it is). Returns (latencies, method note)."""
    p = Path(path)
    made = None
    if not p.exists():
        raise UserError("no such file or directory", field="--device")
    try:
        if p.is_dir():
            fd0, made = tempfile.mkstemp(dir=p, prefix="memtune-calibrate-")
            with os.fdopen(fd0, "wb") as f:
                rng = np.random.default_rng(seed)
                for _ in range(file_mib):
                    f.write(rng.bytes(1 << 20))
                f.flush()
                os.fsync(f.fileno())
            target = made
        else:
            target = str(p)
        size = _size_of(target)
        if size < 16 * PAGE:
            raise UserError(f"{target} is too small to read from ({size} bytes)", field="--device")
        method = "O_DIRECT"
        try:
            fd = os.open(target, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
            direct = hasattr(os, "O_DIRECT")
        except OSError:
            fd, direct = os.open(target, os.O_RDONLY), False
        buf = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT needs
        offsets = np.random.default_rng(seed).integers(0, size // PAGE, reads) * PAGE
        out = []
        try:
            if direct:
                try:
                    os.preadv(fd, [buf], 0)
                except OSError:
                    direct = False
            if not direct:
                os.close(fd)
                fd = os.open(target, os.O_RDONLY)
                method = "buffered reads after POSIX_FADV_DONTNEED (O_DIRECT refused here)"
            for off in offsets.tolist():
                if not direct:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                t = time.perf_counter()
                os.preadv(fd, [buf], off)
                out.append(time.perf_counter() - t)
        finally:
            os.close(fd)
            buf.close()
        return out, method
    except PermissionError as exc:
        raise UserError(f"cannot read {exc.filename or path}: permission denied", field="--device") from None
    except OSError as exc:
        raise UserError(f"cannot use {path}: {exc.strerror}", field="--device") from None
    finally:
        if made:
            os.unlink(made)


def _size_of(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def known_settings() -> set[str]:
    """Names of every setting the loaded plugins register."""
    from memtune.core.plugins import build_plugin_manager
    from memtune.core.registry import settings_registry

    return set(settings_registry(build_plugin_manager()).settings)


def calibrate(
    device: str | None = None,
    role: str = "ssd",
    *,
    known: set[str] | None = None,
    repeats: int = 5,
    reads: int = 500,
) -> Calibration:
    """Run every measurement and map it onto the registered setting names."""
    cal = Calibration()
    known = known_settings() if known is None else known
    if device is not None and not Path(device).exists():
        raise UserError("no such file or directory", field="--device")
    if role not in ROLES:
        raise UserError(f"expected one of {', '.join(ROLES)}, got {role!r}", field="--role")
    m = cal.measured
    m["fault_anon"] = measure_fault_anon(repeats=repeats)
    m["cow_fault"] = measure_cow_fault(repeats=repeats)
    m["copy_4k"] = measure_copy_4k(repeats=repeats)
    dec = measure_decompress(text_pages(), repeats=repeats)
    m["lz4_decompress"], m["zstd_decompress"] = dec["lz4"], dec["zstd"]
    cal.notes.append(
        f"python call overhead {dec['call_overhead'] * 1e9:.0f} ns subtracted from decompression"
    )
    want = {
        "latency.page_alloc": m["fault_anon"],
        "latency.cow_break": m["cow_fault"],
        "latency.decompress": m["fault_anon"] + m["lz4_decompress"],
    }
    if device is not None:
        lat, method = measure_device_read(device, reads=reads)
        arr = np.array(lat)
        m["device_read_mean"] = float(arr.mean())
        m["device_read_median"] = float(np.median(arr))
        m["device_read_p99"] = float(np.quantile(arr, 0.99))
        cal.notes.append(f"device {device}: {len(lat)} random 4 KiB reads, {method}")
        want[ROLES[role]] = m["device_read_mean"] + m["fault_anon"]
    else:
        cal.notes.append("no --device: swap-in latencies not measured")
    for name, value in want.items():
        if name in known:
            cal.settings[name] = value
        else:
            cal.skipped[name] = "no loaded plugin registers this setting"
    return cal


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.4g}us"


def render(cal: Calibration) -> str:
    """The TOML text: a ``[settings]`` table plus comments with every measurement."""
    import tomli_w

    lines = ["# latency settings measured by `memtune calibrate` on this machine", "#"]
    lines += [f"# measured {k}: {_fmt(v)}" for k, v in cal.measured.items()]
    lines += [f"# note: {n}" for n in cal.notes]
    lines += [f"# not written: {k} ({why})" for k, why in cal.skipped.items()]
    body = tomli_w.dumps({"settings": {k: _fmt(v) for k, v in cal.settings.items()}})
    return "\n".join(lines) + "\n\n" + body
