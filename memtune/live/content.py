"""Page bytes for the model's content ids, so that real KSM and zram see what the model sees.

A page's key is the model's ``(salt scope << 47) | content id`` (the ``tps`` plugin's key): equal
keys give equal bytes (KSM merges them), different keys differ in their first 8 bytes. Linux KSM
has no salting, so a salt scope is emulated by the scope in the key. Content id 0 in scope 0 is an
all-zero page. Compressibility follows the model's class: ``RANDOM_BYTES[zclass]`` bytes of
pseudo-random data and zeros after them (lz4/lzo-rle then store about that many bytes), so a page
of class <=1K compresses to about 700 bytes and a page of class "worse" does not compress.
"""

from __future__ import annotations

import numpy as np

from memtune.core.pages import CONTENT_BITS

PAGE = 4096
CONTENT_MASK = (1 << CONTENT_BITS) - 1
RANDOM_BYTES = np.array([700, 1700, 2700, PAGE])      # by class: <=1K, <=2K, <=3K, worse
_POOL_SEED = 0x6D656D74756E65
_POOL = np.random.Generator(np.random.PCG64(_POOL_SEED)).integers(0, 256, 1 << 20, dtype=np.uint8)
_WINDOWS = np.lib.stride_tricks.sliding_window_view(_POOL, PAGE - 8)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread 64-bit hash of each key."""
    z = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def canonical_classes(keys: np.ndarray, zclass: np.ndarray) -> np.ndarray:
    """One compressibility class per key (the first page's): equal bytes compress equally."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return zclass[first][inverse]


def fill(out: np.ndarray, keys: np.ndarray, zclass: np.ndarray) -> None:
    """Write the bytes of pages ``keys`` (classes ``zclass``) into ``out`` (shape (m, 4096), uint8)."""
    out[:] = 0
    nonzero = keys != 0
    if not nonzero.any():
        return
    rows = np.flatnonzero(nonzero)
    out[rows, :8] = keys[rows].astype("<i8").view(np.uint8).reshape(-1, 8)
    rows = rows[(keys[rows] & CONTENT_MASK) != 0]      # a salted zero page is its tag and zeros
    offsets = (mix64(keys[rows]) % np.uint64(_WINDOWS.shape[0])).astype(np.int64)
    for c, n in enumerate(RANDOM_BYTES):
        sel = zclass[rows] == c
        if sel.any():
            out[rows[sel], 8:n] = _WINDOWS[offsets[sel], :n - 8]


def predicted_sharing(keys: np.ndarray, max_page_sharing: int = 256) -> int:
    """KSM's ``pages_sharing`` once it has merged ``keys`` (pages in mergeable areas): every page
    beyond the first of its content, one stable page per ``max_page_sharing`` sharers (its chains:
    Documentation/admin-guide/mm/ksm.rst)."""
    _, counts = np.unique(keys, return_counts=True)
    counts = counts[counts > 1]
    return int((counts - np.ceil(counts / max_page_sharing)).sum())
