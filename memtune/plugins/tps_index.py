"""The content-key index of transparent page sharing: content key -> shared frame or hint."""

from __future__ import annotations

import numpy as np


class ShareIndex:
    """Content key -> slot (refcount of a shared frame, or a hint page), vectorised.

    Keys live in two sorted levels: ``main`` and a small ``recent`` level that takes new keys; when
    ``recent`` grows past a quarter of ``main`` the two are merged (and dead slots dropped), so an
    insert costs amortised O(1) copies and a lookup two binary searches. A slot is live while it
    has a refcount (a shared frame) or a hint page.
    """

    def __init__(self) -> None:
        empty = np.zeros(0, dtype=np.int64)
        self.main_keys, self.main_slots = empty, empty
        self.new_keys, self.new_slots = empty, empty
        self.ref = np.zeros(1024, dtype=np.int64)
        self.hint = np.full(1024, -1, dtype=np.int64)
        self.size = 0                      # slots handed out

    def __len__(self) -> int:
        return int(self.main_keys.size + self.new_keys.size)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Slot of each key, -1 where absent."""
        slot = np.full(keys.size, -1, dtype=np.int64)
        for ks, ss in ((self.main_keys, self.main_slots), (self.new_keys, self.new_slots)):
            if ks.size == 0 or keys.size == 0:
                continue
            p = np.minimum(np.searchsorted(ks, keys), ks.size - 1)
            hit = ks[p] == keys
            slot[hit] = ss[p[hit]]
        return slot

    def insert(self, keys: np.ndarray, ref: np.ndarray, hint: np.ndarray) -> None:
        """Add new, sorted, distinct keys that are not in the index."""
        n = keys.size
        if n == 0:
            return
        need = self.size + n
        if need > self.ref.size:
            cap = max(need, 2 * self.ref.size)
            self.ref = np.concatenate([self.ref, np.zeros(cap - self.ref.size, dtype=np.int64)])
            self.hint = np.concatenate([self.hint, np.full(cap - self.hint.size, -1, dtype=np.int64)])
        slots = np.arange(self.size, need, dtype=np.int64)
        self.ref[slots] = ref
        self.hint[slots] = hint
        self.size = need
        at = np.searchsorted(self.new_keys, keys)
        self.new_keys = np.insert(self.new_keys, at, keys)
        self.new_slots = np.insert(self.new_slots, at, slots)

    def needs_merge(self) -> bool:
        return self.new_keys.size > max(4096, self.main_keys.size // 4)

    def merge(self, keep_hint: np.ndarray | None = None) -> None:
        """Merge the recent level into the main one and renumber live slots in key order.

        ``keep_hint`` (bool per slot, optional) says which hints are still worth keeping.
        """
        keys = np.concatenate([self.main_keys, self.new_keys])
        slots = np.concatenate([self.main_slots, self.new_slots])
        order = np.argsort(keys, kind="stable")
        keys, slots = keys[order], slots[order]
        hint = self.hint[slots]
        if keep_hint is not None:
            hint = np.where(keep_hint[slots], hint, -1)
        ref = self.ref[slots]
        live = (ref > 0) | (hint >= 0)
        keys, ref, hint = keys[live], ref[live], hint[live]
        n = keys.size
        cap = max(1024, 2 * n)
        self.ref = np.zeros(cap, dtype=np.int64)
        self.hint = np.full(cap, -1, dtype=np.int64)
        self.ref[:n] = ref
        self.hint[:n] = hint
        self.size = n
        self.main_keys, self.main_slots = keys, np.arange(n, dtype=np.int64)
        self.new_keys, self.new_slots = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)

    def frames(self) -> int:
        """Shared frames in use (slots with a refcount)."""
        return int(np.count_nonzero(self.ref[: self.size] > 0))
