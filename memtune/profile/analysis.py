"""Content analysis of real pages: zero, duplicate, shareable across sources, compressibility.

How pages are compared
    Every non-zero 4 KiB page is hashed with xxh3-64 (one C call per page: 4-5 GiB/s per core on the
    reference machine, see ``benchmarks/profiling.py``; a numpy-vectorised scheme measured no faster).
    Pages with equal hashes are counted as identical: a false match needs a 64-bit collision, about
    n^2 / 2^65 for n pages (1e-7 for 64 GiB of pages). Zero pages are found with a vectorised test
    over 64-bit words and are not hashed.

What is counted (per source, and across all sources as one host with ``Mem.ShareForceSalting`` 0)
    ``zero``                pages that hold only zero bytes
    ``shareable``           non-zero pages whose content also occurs in another source (the model's
                            *template* pages: identical across VMs of the same image)
    ``duplicate``           other non-zero pages whose content occurs more than once inside the source
                            (all copies, including the first; ``duplicate_groups`` distinct contents)
    ``unique``              the rest
    ``ksm_pages_shared`` / ``ksm_pages_sharing``  as KSM counts them (Documentation/admin-guide/mm/ksm.rst):
                            one KSM page per content that occurs at least twice (``pages_shared``) and
                            the further pages mapped to it (``pages_sharing`` = pages saved), zero pages
                            merged like any content (``use_zero_pages`` = 0, the default)

Compressibility
    A Bernoulli sample (fraction ``sample``, seeded) of the non-zero pages is compressed with lz4
    (block format, acceleration 1, as zswap/zram use it) and zstd (level 3, the Linux crypto API
    default ZSTD_DEF_LEVEL). Shares of pages per size class (``le_1k`` <= 1 KiB, ``le_2k`` <= 2 KiB,
    ``le_3k`` <= 3 KiB, ``worse``; the classes of the model) come with 95 % Wilson intervals; the
    cumulative <= 2 KiB share is what ESX memory compression keeps. Zero pages compress to a few bytes
    and are known exactly, so they are not sampled; shares over all pages count them as ``le_1k``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memtune.profile.sources import PAGE
from memtune.profile.stats import Z95, ratio_interval, wilson

CLASS_NAMES = ("le_1k", "le_2k", "le_3k", "worse")
CLASS_LIMITS = np.array([1024, 2048, 3072])     # ESX keeps a page compressed if <= 2 KiB (docs/model.md)
ZSTD_LEVEL = 3                                  # linux/crypto/zstd.c ZSTD_DEF_LEVEL


def _compressors() -> dict[str, Callable[[Any], int]]:
    import lz4.block
    import zstandard

    zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False, write_checksum=False)
    lz = lz4.block.compress

    return {
        "lz4": lambda page: len(lz(page, store_size=False)),
        "zstd": lambda page: len(zc.compress(page)),
    }


COMPRESSORS = ("lz4", "zstd")


def page_hashes(pages: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """xxh3-64 of each row (or of the rows ``rows``) of a ``(n, 4096)`` uint8 array, as uint64."""
    import xxhash

    h = xxhash.xxh3_64_intdigest
    mv = memoryview(np.ascontiguousarray(pages).reshape(-1))
    if rows is None:
        n = pages.shape[0]
        return np.fromiter((h(mv[i:i + PAGE]) for i in range(0, n * PAGE, PAGE)), dtype=np.uint64, count=n)
    return np.fromiter((h(mv[o:o + PAGE]) for o in (rows * PAGE).tolist()), dtype=np.uint64, count=rows.size)


def zero_mask(pages: np.ndarray) -> np.ndarray:
    """True for rows of a ``(n, 4096)`` uint8 array that are all zero bytes."""
    return ~pages.view(np.uint64).any(axis=1)


@dataclass
class _Distinct:
    """The distinct non-zero contents of each source (``uniq[i]``, with their page ``counts[i]``) and
    of all sources together: ``u``, how many sources hold each (``nsrc``) and its pages (``total``)."""

    uniq: list[np.ndarray]
    counts: list[np.ndarray]
    u: np.ndarray
    inv: np.ndarray                   # per source's distinct content, in source order: its index in u
    nsrc: np.ndarray
    total: np.ndarray

    @classmethod
    def of(cls, hashes: list[np.ndarray]) -> _Distinct:
        uniq, counts = [], []
        for h in hashes:
            u, c = np.unique(h, return_counts=True)
            uniq.append(u)
            counts.append(c)
        all_u = np.concatenate(uniq) if uniq else np.zeros(0, dtype=np.uint64)
        g_u, g_inv, g_nsrc = np.unique(all_u, return_inverse=True, return_counts=True)
        g_total = np.bincount(g_inv, weights=np.concatenate(counts) if counts else None,
                              minlength=g_u.size).astype(np.int64)
        return cls(uniq, counts, g_u, g_inv, g_nsrc, g_total)

    def inv_of(self, i: int) -> np.ndarray:
        """Index in ``u`` of each distinct content of source ``i``."""
        off = sum(u.size for u in self.uniq[:i])
        return self.inv[off:off + self.uniq[i].size]

    def degree(self) -> np.ndarray:
        """Page instances by the number of sources holding their content (index 0 unused)."""
        degree = np.zeros(len(self.uniq) + 1, dtype=np.int64)
        for i in range(len(self.uniq)):
            degree += np.bincount(self.nsrc[self.inv_of(i)], weights=self.counts[i],
                                  minlength=degree.size).astype(np.int64)
        return degree


@dataclass
class _SourceAcc:
    info: Any
    pages: int = 0
    zero: int = 0
    hashes: list[np.ndarray] = field(default_factory=list)
    sizes: dict[str, list[np.ndarray]] = field(default_factory=dict)


class Profiler:
    """Reads sources chunk by chunk and keeps only hashes and sampled compressed sizes.

    ``sample`` is the share of non-zero pages compressed (1.0 = all); ``seed`` makes the sample
    reproducible (each source draws from its own stream, so adding a source does not change the
    sample of the others). ``compressors`` restricts the compressors run (default lz4 and zstd).
    """

    def __init__(self, sample: float = 1.0, seed: int = 0, compressors: Iterable[str] = COMPRESSORS) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError("sample must be within 0..1")
        self.sample = float(sample)
        self.seed = int(seed)
        comp = _compressors()
        self.compressors = {name: comp[name] for name in compressors}
        self._acc: list[_SourceAcc] = []

    def add(self, source: Any, chunk_pages: int | None = None) -> None:
        """Read every page of ``source`` (an ImageSource, ProcessSource or anything with
        ``info`` and ``chunks()``)."""
        acc = _SourceAcc(source.info, sizes={c: [] for c in self.compressors})
        rng = np.random.default_rng([self.seed, len(self._acc)])
        chunks = source.chunks() if chunk_pages is None else source.chunks(chunk_pages)
        for chunk in chunks:
            self._add_chunk(acc, chunk, rng)
        self._acc.append(acc)

    def _add_chunk(self, acc: _SourceAcc, chunk: np.ndarray, rng: np.random.Generator) -> None:
        n = chunk.shape[0]
        acc.pages += n
        nz = np.flatnonzero(~zero_mask(chunk))
        acc.zero += n - nz.size
        if nz.size == 0:
            return
        acc.hashes.append(page_hashes(chunk, None if nz.size == n else nz))
        if not self.compressors or self.sample <= 0.0:
            return
        pick = nz if self.sample >= 1.0 else nz[rng.random(nz.size) < self.sample]
        if pick.size == 0:
            return
        flat = memoryview(chunk.reshape(-1))
        for name, fn in self.compressors.items():
            acc.sizes[name].append(np.fromiter(
                (fn(flat[i * PAGE:(i + 1) * PAGE]) for i in pick.tolist()), dtype=np.int32, count=pick.size))

    # --- results ---------------------------------------------------------------------------------

    def hashes(self, index: int) -> np.ndarray:
        """All non-zero page hashes of source ``index`` (for checks and tests)."""
        h = self._acc[index].hashes
        return np.concatenate(h) if h else np.zeros(0, dtype=np.uint64)

    def result(self) -> dict[str, Any]:
        """Counts per source and across sources, plus compressibility, as plain data."""
        d = _Distinct.of([self.hashes(i) for i in range(len(self._acc))])
        per = [self._source_entry(acc, d.uniq[i], d.counts[i], d.nsrc[d.inv_of(i)])
               for i, acc in enumerate(self._acc)]
        cross_pages = sum(e["shareable"] for e in per)
        salting2 = sum(e["saved_inside_pages"] for e in per)
        across = self._across(d, cross_pages, salting2)
        return {"page_size": PAGE, "hash": "xxh3_64", "sample_fraction": self.sample, "seed": self.seed,
                "confidence": 0.95, "z": Z95, "sources": per, "across": across}

    def _source_entry(
        self, acc: _SourceAcc, u: np.ndarray, c: np.ndarray, nsrc: np.ndarray
    ) -> dict[str, Any]:
        """One source: zero pages; non-zero pages whose content another source holds (shareable),
        that repeat only inside it (duplicate), or that are unique; what sharing inside it saves."""
        cross = nsrc >= 2
        dup = ~cross & (c >= 2)
        nonzero = int(c.sum())
        shareable = int(c[cross].sum())
        duplicate = int(c[dup].sum())
        entry = {
            "name": acc.info.name, "kind": acc.info.kind, "location": acc.info.location,
            "pages": acc.pages, "zero": acc.zero, "shareable": shareable, "duplicate": duplicate,
            "duplicate_groups": int(np.count_nonzero(dup)),
            "unique": nonzero - shareable - duplicate,
            "distinct_nonzero": int(u.size),
            "saved_inside_pages": (nonzero - int(u.size)) + max(acc.zero - 1, 0),
            "details": dict(acc.info.details),
        }
        entry["compress"] = self._compress_stats([acc])
        return entry

    def _across(self, d: _Distinct, cross_pages: int, salting2: int) -> dict[str, Any]:
        """All sources together: what KSM would share (salting 0) and what sharing inside each
        source saves (salting 2), cross-source sharing, the sharing-degree distribution."""
        total_zero = sum(a.zero for a in self._acc)
        multi = d.total >= 2
        shared_nz = int(np.count_nonzero(multi))
        sharing_nz = int(d.total[multi].sum()) - shared_nz
        cross_multi = d.nsrc >= 2
        ksm_shared = shared_nz + (1 if total_zero >= 2 else 0)
        ksm_sharing = sharing_nz + (total_zero - 1 if total_zero >= 2 else 0)
        return {
            "pages": sum(a.pages for a in self._acc), "zero": total_zero, "distinct_nonzero": int(d.u.size),
            "ksm_pages_shared": ksm_shared, "ksm_pages_sharing": ksm_sharing,
            "cross_source_pages": cross_pages,
            "cross_pages_shared": int(np.count_nonzero(cross_multi)),
            "cross_pages_sharing": cross_pages - int(np.count_nonzero(cross_multi)),
            "saved_bytes_salting0": ksm_sharing * PAGE,
            "saved_bytes_salting2": salting2 * PAGE,
            "compress": self._compress_stats(self._acc),
            # non-zero pages whose content exactly k of the sources hold, k = 1..sources
            "sharing_degree": [int(x) for x in d.degree()[1:]],
        }

    def _compress_stats(self, accs: list[_SourceAcc]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        pages = sum(a.pages for a in accs)
        zero = sum(a.zero for a in accs)
        nonzero = pages - zero
        for name in self.compressors:
            parts = [s for a in accs for s in a.sizes[name]]
            sizes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
            n = int(sizes.size)
            cls = np.searchsorted(CLASS_LIMITS, sizes, side="left")   # size <= limit -> that class
            k = np.bincount(cls, minlength=4)[:4]
            entry: dict[str, Any] = {"sampled": n, "nonzero_pages": nonzero}
            if n == 0:
                out[name] = entry
                continue
            bins, bins_ci, cum, cum_ci, all_pages = {}, {}, {}, {}, {}
            for j, cname in enumerate(CLASS_NAMES):
                bins[cname] = k[j] / n
                bins_ci[cname] = list(wilson(int(k[j]), n, nonzero))
            run = np.cumsum(k)
            for j, limit in enumerate(("le_1k", "le_2k", "le_3k")):
                cum[limit] = run[j] / n
                cum_ci[limit] = list(wilson(int(run[j]), n, nonzero))
            w_nz = nonzero / pages if pages else 0.0
            for j, cname in enumerate(CLASS_NAMES):
                extra = (zero / pages) if (j == 0 and pages) else 0.0
                lo, hi = bins_ci[cname]
                all_pages[cname] = {"share": extra + w_nz * bins[cname],
                                    "interval": [extra + w_nz * lo, extra + w_nz * hi]}
            ratio, rlo, rhi = ratio_interval(sizes.astype(np.float64), PAGE, nonzero)
            entry.update({
                "classes": {c: float(v) for c, v in bins.items()},
                "classes_interval": bins_ci,
                "cumulative": {c: float(v) for c, v in cum.items()},
                "cumulative_interval": cum_ci,
                "kept_by_esx": float(cum["le_2k"]),
                "ratio": ratio, "ratio_interval": [rlo, rhi],
                "all_pages": all_pages,
            })
            out[name] = entry
        return out
