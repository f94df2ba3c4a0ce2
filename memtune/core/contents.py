"""Content ids: what a page holds, as one int64, so identical pages can be found.

``0`` is the zero page; ``template(image, j)`` (page j of a guest image, the same in every VM
booted from it), ``group(g, j)`` (content shared by some VMs, :mod:`memtune.core.content_groups`),
``duplicate(vm, group)`` (repeated inside one VM) and ``unique(page)`` (data, and anything
written; ``rewritten`` counts the page's writes in the owner bits, so each write is new content).
Two bits of kind, 13 of owner (image, VM or write generation), 32 of index: 47 bits, so a plugin
may put a 16-bit scope above them (page sharing's salt, :mod:`memtune.plugins.tps_state`).
"""

from __future__ import annotations

import numpy as np

CONTENT_BITS = 47
_KIND_SHIFT = 45
_OWNER_SHIFT = 32
ZERO_CONTENT = 0
TEMPLATE_KIND, DUPLICATE_KIND, UNIQUE_KIND = 1, 2, 3


def template_content(image: int, index: np.ndarray) -> np.ndarray:
    """Content id of template page ``index`` of guest image ``image`` (same in every VM of it)."""
    return (TEMPLATE_KIND << _KIND_SHIFT) | (int(image) << _OWNER_SHIFT) | (index.astype(np.int64) + 1)


GROUP_IMAGE_BASE = 1 << 12  # image ids from here on are content groups (13 image bits: 8192 ids)


def group_content(group: int, index: np.ndarray) -> np.ndarray:
    """Content id of page ``index`` of content group ``group`` (same in every VM holding the group)."""
    return template_content(GROUP_IMAGE_BASE + int(group), index)


def duplicate_content(vm: int, group: np.ndarray) -> np.ndarray:
    """Content id of intra-VM duplicate group ``group`` of VM ``vm``."""
    return (DUPLICATE_KIND << _KIND_SHIFT) | (int(vm) << _OWNER_SHIFT) | (group.astype(np.int64) + 1)


def unique_content(page: np.ndarray) -> np.ndarray:
    """Content id no other page holds (used for data and for anything written)."""
    return (UNIQUE_KIND << _KIND_SHIFT) | page.astype(np.int64)


def rewritten(content: np.ndarray, page: np.ndarray) -> np.ndarray:
    """Content of ``page`` after a write: unique, and not what it held before (its write generation,
    13 bits, moves on). A guest's write changes the page's bytes each time, so KSM's checksum sees a
    change at every write between two visits (mm/ksm.c cmp_and_merge_page: the page stays volatile)."""
    gen = np.where(is_unique(content), (content >> _OWNER_SHIFT) + 1, 1) & _GEN_MASK
    return unique_content(page) | (gen << _OWNER_SHIFT)


_GEN_MASK = (1 << (_KIND_SHIFT - _OWNER_SHIFT)) - 1


def is_unique(content: np.ndarray) -> np.ndarray:
    """Mask of content ids made by :func:`unique_content` (they never match another page's)."""
    return (content >> _KIND_SHIFT) == UNIQUE_KIND
