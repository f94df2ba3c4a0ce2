"""KSM's stable and unstable trees as sorted numpy arrays (used by the ``ksm`` plugin).

Kernel rules (mm/ksm.c, Documentation/admin-guide/mm/ksm.rst):

- The *stable tree* holds merged (KSM) pages by content. A content key may have several KSM pages
  ("dups" of a stable-node chain) because one KSM page is mapped at most ``max_page_sharing``
  times. Here each key keeps its mappings ``ref`` and KSM pages ``frames``; a key has room for
  ``frames * max_page_sharing - ref`` more mappings.
- The *unstable tree* holds pages whose checksum did not change since the previous visit, one per
  content, until a second such page arrives and the two merge into a new KSM page. It is rebuilt
  from empty at the start of every full scan.
"""

from __future__ import annotations

import numpy as np


def find_sorted(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each ``wanted`` key in the sorted array ``keys``, -1 where absent."""
    if keys.size == 0 or wanted.size == 0:
        return np.full(wanted.size, -1, dtype=np.int64)
    p = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    return np.where(keys[p] == wanted, p, -1)


class StableTree:
    """Content key -> (mappings, KSM pages). Keys sorted; keys with no mapping left are dropped
    when new keys are added."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.ref = np.zeros(0, dtype=np.int64)
        self.frames = np.zeros(0, dtype=np.int64)

    def find(self, keys: np.ndarray) -> np.ndarray:
        return find_sorted(self.keys, keys)

    def add(self, keys: np.ndarray, ref: np.ndarray, frames: np.ndarray) -> None:
        """Insert new distinct keys (not in the tree), sorted or not."""
        if keys.size == 0:
            return
        live = self.ref > 0
        k = np.concatenate([self.keys[live], keys])
        order = np.argsort(k, kind="stable")
        self.keys = k[order]
        self.ref = np.concatenate([self.ref[live], ref])[order]
        self.frames = np.concatenate([self.frames[live], frames])[order]

    def pages_shared(self) -> int:
        return int(self.frames.sum())

    def mappings(self) -> int:
        return int(self.ref.sum())


class UnstableTree:
    """Content key -> the page waiting for a partner, for the current full scan."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.page = np.zeros(0, dtype=np.int64)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Index of each key's entry, -1 where absent (entries taken are kept with page -1)."""
        i = find_sorted(self.keys, keys)
        ok = i >= 0
        i[ok] = np.where(self.page[i[ok]] >= 0, i[ok], -1)
        return i

    def take(self, idx: np.ndarray) -> None:
        self.page[idx] = -1

    def insert(self, keys: np.ndarray, pages: np.ndarray) -> None:
        """Insert distinct keys; a key already present (its page taken) gets the new page."""
        if keys.size == 0:
            return
        i = find_sorted(self.keys, keys)
        old = i >= 0
        self.page[i[old]] = pages[old]
        keys, pages = keys[~old], pages[~old]
        if keys.size == 0:
            return
        k = np.concatenate([self.keys, keys])
        order = np.argsort(k, kind="stable")
        self.keys = k[order]
        self.page = np.concatenate([self.page, pages])[order]
