"""Per-page state for the whole host, held in numpy arrays.

VMs own contiguous ranges ``[base[v], base[v] + npages[v])``, laid out in hotness-rank order (see
``workload``). One simulated page stands for ``scale`` 4 KiB pages. Page states are small integers:
the core defines ``FREE`` (no machine page behind it: never touched, or given back) and ``RESIDENT``
(a private machine page); plugins register the rest (shared, ballooned, compressed, swapped ...)
through ``memtune_register_page_states``. Per-VM, per-state counts are kept up to date from the
pages that change, never by recounting.

``content`` holds each page's content id (:mod:`memtune.core.contents`), so identical pages can be
found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from memtune.core.contents import CONTENT_BITS  # noqa: F401 - where memtune.live reads it

FREE = 0
RESIDENT = 1
MAX_STATES = 32  # page state codes fit in 5 bits; per-state tables have this length

def first_of_each(vm: np.ndarray, want: np.ndarray, n: np.ndarray | None = None) -> np.ndarray:
    """Mask of the first ``want[v]`` entries of each VM ``v`` in ``vm``, a list grouped by VM
    (``n``: the entries per VM, if the caller has counted them)."""
    if n is None:
        n = np.bincount(vm, minlength=want.size)
    return np.arange(vm.size) - (n.cumsum() - n)[vm] < want[vm]


@dataclass(frozen=True)
class PageStateInfo:
    """What a page state means to the core.

    ``private_frame``: the page holds a machine page of its own (counts as consumed).
    ``mapped``: the guest can read it without a fault (counts as granted).
    ``read_fault`` / ``write_fault``: a touch (or a write) traps to the owner's fault handler.
    ``fault_allocates``: the fault needs a free machine page (blocked in the low state).
    ``fault``: the owner's handler, ``fault(host=, pages=, write=) -> seconds per page``; it brings
    the pages back to a mapped state (None: the ``memtune_page_fault`` hook serves them).
    """

    code: int
    name: str
    owner: str
    private_frame: bool
    mapped: bool
    read_fault: bool
    write_fault: bool
    fault_allocates: bool
    fault: Callable[..., np.ndarray] | None = None


FLAGS = ("private_frame", "mapped", "read_fault", "write_fault", "fault_allocates")


class PageStates:
    """Page states and their flags; codes are handed out in registration order.

    Lookup tables over state codes (``table``, ``flag_table``) are boolean arrays of ``MAX_STATES``
    entries, indexed by a page's state (``table.take(pages.state[idx])``).
    """

    def __init__(self) -> None:
        self._by_name: dict[str, PageStateInfo] = {}
        self._list: list[PageStateInfo] = []
        self.add(
            "free",
            owner="core",
            private_frame=False,
            mapped=False,
            read_fault=True,
            write_fault=True,
            fault_allocates=True,
        )
        self.add(
            "resident",
            owner="core",
            private_frame=True,
            mapped=True,
            read_fault=False,
            write_fault=False,
            fault_allocates=False,
        )

    def add(
        self,
        name: str,
        *,
        owner: str,
        private_frame: bool = False,
        mapped: bool = False,
        read_fault: bool = True,
        write_fault: bool = True,
        fault_allocates: bool = True,
        fault: Callable[..., np.ndarray] | None = None,
    ) -> int:
        """Register a state (with its fault handler); returns its code. Names are unique."""
        if name in self._by_name:
            raise ValueError(f"page state {name!r} registered twice ({self._by_name[name].owner}, {owner})")
        if len(self._list) >= MAX_STATES:
            raise ValueError(f"at most {MAX_STATES} page states")
        info = PageStateInfo(
            len(self._list),
            name,
            owner,
            private_frame,
            mapped,
            read_fault,
            write_fault,
            fault_allocates,
            fault,
        )
        self._by_name[name] = info
        self._list.append(info)
        return info.code

    def code(self, name: str) -> int | None:
        info = self._by_name.get(name)
        return None if info is None else info.code

    def __getitem__(self, code: int) -> PageStateInfo:
        return self._list[code]

    def __len__(self) -> int:
        return len(self._list)

    def __iter__(self):
        return iter(self._list)

    def mask(self, predicate: Callable[[PageStateInfo], bool]) -> np.ndarray:
        """Boolean lookup table over the registered state codes (``len(self)`` entries)."""
        return np.array([predicate(s) for s in self._list], dtype=bool)

    def table(self, *states: int | str) -> np.ndarray:
        """Lookup table (``MAX_STATES`` entries) true for the given state codes or names."""
        out = np.zeros(MAX_STATES, dtype=bool)
        for st in states:
            out[self._by_name[st].code if isinstance(st, str) else int(st)] = True
        return out

    def flag_table(self, flag: str) -> np.ndarray:
        """Lookup table (``MAX_STATES`` entries) true for the states with ``flag`` set."""
        if flag not in FLAGS:
            raise ValueError(f"unknown page-state flag {flag!r} (flags: {', '.join(FLAGS)})")
        out = np.zeros(MAX_STATES, dtype=bool)
        out[: len(self._list)] = self.mask(lambda s: getattr(s, flag))
        return out


class PageTable:
    """The host's pages: state, owner VM, content, compressed-size class, last touch."""

    def __init__(self, npages: np.ndarray, states: PageStates, scale: int) -> None:
        self.states = states
        self.scale = int(scale)
        self.npages = npages.astype(np.int64)
        self.base = np.concatenate([[0], np.cumsum(self.npages)[:-1]]).astype(np.int64)
        total = int(self.npages.sum())
        self.total = total
        nvm = len(self.npages)
        self.vm = np.repeat(np.arange(nvm, dtype=np.int32), self.npages)
        self.state = np.zeros(total, dtype=np.uint8)
        self.content = np.zeros(total, dtype=np.int64)
        self.zclass = np.zeros(total, dtype=np.uint8)
        self.last_touch = np.full(total, -1.0, dtype=np.float32)
        self.ns = MAX_STATES
        self.counts = np.zeros((nvm, self.ns), dtype=np.int64)
        self.counts[:, FREE] = self.npages
        self._scratch = np.zeros(total, dtype=np.int32)  # per-page slot for `first_seen` / `member`

    def first_seen(self, pages: np.ndarray) -> np.ndarray:
        """Mask of one entry per distinct page in ``pages``; the order of ``pages`` is kept, so a
        random draw stays random and a list grouped by VM stays grouped. O(len(pages)), no sort."""
        pos = np.arange(pages.size, dtype=np.int32)
        self._scratch[pages] = pos  # one position per distinct page survives the scatter
        return self._scratch[pages] == pos

    def distinct(self, pages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct pages of ``pages`` in the order first seen, and for each entry the index of
        its page among them (``np.unique(..., return_inverse=True)`` without the sort)."""
        uniq = pages[self.first_seen(pages)]
        self._scratch[uniq] = np.arange(uniq.size, dtype=np.int32)
        return uniq, self._scratch[pages].astype(np.intp)

    def member(self, pages: np.ndarray, of: np.ndarray) -> np.ndarray:
        """``np.isin(pages, of)`` for page indices, in O(len(pages) + len(of)) with no sort."""
        self._scratch[pages] = 0
        self._scratch[of] = 1
        return self._scratch[pages] == 1

    def set_state(self, pages: np.ndarray, new: int | np.ndarray) -> None:
        """Move ``pages`` (unique indices) to state ``new``, keeping per-VM counts exact."""
        if pages.size == 0:
            return
        size = self.counts.size
        vm = self.vm[pages]
        key = vm * self.ns  # int32: nvm * 32 stays far below 2**31
        flat = self.counts.reshape(-1)
        flat -= np.bincount(key + self.state[pages], minlength=size)
        if not isinstance(new, np.ndarray):
            self.counts[:, int(new)] += np.bincount(vm, minlength=self.counts.shape[0])
        else:
            flat += np.bincount(key + np.asarray(new, dtype=np.int32), minlength=size)
        self.state[pages] = new

    def _list_range(
        self,
        v: int,
        lo: int,
        span: int,
        allowed: np.ndarray,
        codes: np.ndarray,
        shift: int = 0,
        wrap: int | None = None,
    ) -> np.ndarray:
        """Pages of VM ``v`` at positions ``[lo, lo + span)`` whose state is allowed, in position
        order; with ``wrap``, position ``r`` is rank ``(r + shift) % wrap``. At most two contiguous
        slices of the state array."""
        first, head = int(lo), int(span)
        if wrap is not None:
            first = (first + int(shift)) % int(wrap)
            head = min(head, int(wrap) - first)
        out = []
        for start, n in ((first, head), (0, int(span) - head)):
            if n <= 0:
                continue
            at = int(self.base[v]) + start
            states = self.state[at : at + n]
            out.append(at + (states == codes[0] if codes.size == 1 else allowed.take(states)).nonzero()[0])
        return np.concatenate(out) if len(out) > 1 else out[0] if out else np.zeros(0, dtype=np.int64)

    def count(self, state: int) -> np.ndarray:
        """Pages in ``state`` per VM."""
        return self.counts[:, state]

    def pick_random(
        self,
        rng: np.random.Generator,
        want: np.ndarray,
        allowed: np.ndarray,
        *,
        lo: np.ndarray | None = None,
        hi: np.ndarray | None = None,
        shift: np.ndarray | None = None,
        wrap: np.ndarray | None = None,
        tries: int = 4,
    ) -> np.ndarray:
        """Up to ``want[v]`` distinct random pages of each VM whose state is allowed, grouped by VM
        and in random order inside each VM.

        ``allowed`` is a boolean table over state codes; ``lo``/``hi`` bound the rank range per VM.
        With ``shift`` and ``wrap``, ranks are counted from ``shift[v]`` round the ``wrap[v]`` first
        ranks: position ``r`` in ``[lo, hi)`` (``hi <= wrap``) is rank ``(r + shift) % wrap``, for a
        window that wraps, such as a working set's hot window and the pages outside it.
        Uniform ranks are drawn in proportion to what is wanted over the density of allowed pages
        (first from the per-state counts, then as the draws found it: a window may hold fewer of
        them than the VM's average), so the cost follows the pages picked. A VM's range is listed
        instead where that is cheaper (it wants a large part of what the range holds, or the state is
        sparse there), or when it is still short after ``tries`` rounds.
        """
        r = self._ranges(lo, hi, shift, wrap)
        table = allowed[: self.ns]
        n_allowed = self.counts.dot(table.astype(np.int64))
        density = np.minimum(n_allowed, r.span) / np.maximum(r.span, 1)
        want = np.minimum(np.asarray(want, dtype=np.int64), np.minimum(r.span, n_allowed))
        chosen, have, listed = self._draw_rounds(rng, want, allowed, r, density, tries)
        codes = table.nonzero()[0]
        for v in listed.nonzero()[0]:         # the rest: list the range, pick among what is left
            cand = self._list_range(v, r.lo[v], r.span[v], allowed, codes, *r.wrap_of(v))
            if have[v]:
                cand = cand[~self.member(cand, np.concatenate(chosen))]
            chosen.append(rng.choice(cand, size=min(int(want[v] - have[v]), cand.size), replace=False))
        if not chosen:
            return np.zeros(0, dtype=np.int64)
        out = np.concatenate(chosen).astype(np.int64)
        return out[self.vm[out].argsort(kind="stable")] if len(chosen) > 1 else out

    def _ranges(
        self, lo: np.ndarray | None, hi: np.ndarray | None, shift: np.ndarray | None, wrap: np.ndarray | None
    ) -> _Ranges:
        """Each VM's positions ``[lo, lo + span)`` (``hi`` capped at the VM's pages) and, with a
        shift, the wrap they count round."""
        hi = self.npages if hi is None else np.minimum(np.asarray(hi, dtype=np.int64), self.npages)
        if lo is None:
            lo, span = np.zeros(self.counts.shape[0], dtype=np.int64), hi
        else:
            lo = np.asarray(lo, dtype=np.int64)
            span = np.maximum(hi - lo, 0)
        if shift is None:
            return _Ranges(lo, span, start=self.base + lo)
        wrap = np.maximum(np.asarray(wrap, dtype=np.int64), 1)
        shift = np.asarray(shift, dtype=np.int64) % wrap
        return _Ranges(lo, span, start=self.base + lo + shift, shift=shift, wrap=wrap, end=self.base + wrap)

    def _draw_rounds(
        self,
        rng: np.random.Generator,
        want: np.ndarray,
        allowed: np.ndarray,
        r: _Ranges,
        density: np.ndarray,
        tries: int,
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Up to ``tries`` rounds of uniform draws for the VMs where drawing is cheaper than listing;
        each round sizes its draws by the density the last one found. Returns the pages chosen, how
        many each VM has, and the VMs whose range is to be listed instead."""
        listed = _cheaper_listed(want, density, r.span)
        remaining = np.where(listed, 0, want)
        chosen: list[np.ndarray] = []
        have = np.zeros(self.counts.shape[0], dtype=np.int64)
        for _ in range(tries):
            if not remaining.any():
                break
            draws = np.where(remaining > 0, np.ceil(remaining * 1.25 / np.maximum(density, 1e-3)) + 4, 0)
            draws = np.minimum(draws, 4 * r.span).astype(np.int64)
            page, vm, seen = self._draw(rng, draws, allowed, r)
            page, vm, n = self._not_chosen(page, vm, seen, chosen)
            chosen.append(page[first_of_each(vm, remaining, n)])
            got = np.minimum(n, remaining)
            remaining -= got
            have += got
            if not remaining.any():
                break
            density = np.where(draws > 0, np.maximum(seen, 0.5) / np.maximum(draws, 1), density)
            density = np.maximum(density - have / np.maximum(r.span, 1), 0.0)  # what is left to pick
            now_listed = _cheaper_listed(remaining, density, r.span)
            listed |= now_listed
            remaining[now_listed] = 0
        return chosen, have, listed | (remaining > 0)

    def _draw(
        self, rng: np.random.Generator, draws: np.ndarray, allowed: np.ndarray, r: _Ranges
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``draws[v]`` uniform positions in each VM's range: the pages whose state is allowed,
        their VMs, and how many each VM's draws found (the counts say how many allowed pages a VM
        has, not where they are)."""
        vm = np.arange(draws.size).repeat(draws)
        page = (rng.random(vm.size) * r.span[vm]).astype(np.int64)  # uniform positions
        page += r.start[vm]
        if r.shift is not None:  # position + shift < 2 * wrap: one subtraction wraps it
            page -= r.wrap[vm] * (page >= r.end[vm])
        ok = allowed.take(self.state[page])
        page, vm = page[ok], vm[ok]
        return page, vm, np.bincount(vm, minlength=draws.size)

    def _not_chosen(
        self, page: np.ndarray, vm: np.ndarray, n: np.ndarray, chosen: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The drawn pages without repeats and without pages chosen in earlier rounds, with their
        count per VM."""
        new = self.first_seen(page)
        if chosen:
            new[new] = ~self.member(page[new], np.concatenate(chosen))
        if new.all():
            return page, vm, n
        page, vm = page[new], vm[new]
        return page, vm, np.bincount(vm, minlength=n.size)


@dataclass
class _Ranges:
    """Per VM, the positions pick_random draws from: ``[lo, lo + span)``, position 0 at page
    ``start``; with a shift, pages from ``end`` on wrap back by ``wrap``."""

    lo: np.ndarray
    span: np.ndarray
    start: np.ndarray
    shift: np.ndarray | None = None
    wrap: np.ndarray | None = None
    end: np.ndarray | None = None

    def wrap_of(self, v: int) -> tuple[int, int | None]:
        """``(shift, wrap)`` of VM ``v`` for ``_list_range`` (``(0, None)``: no wrap)."""
        return (0, None) if self.shift is None else (self.shift[v], self.wrap[v])


def _cheaper_listed(wanted: np.ndarray, density: np.ndarray, span: np.ndarray) -> np.ndarray:
    """VMs where listing the range is cheaper than drawing: wanting a large part of what the range
    holds (draws would mostly repeat), or a sparse state there; a draw costs about 16 listed pages,
    listing a VM's range 50000 more."""
    d = np.maximum(density, 1e-3)
    return (wanted > 0) & ((2 * wanted >= d * span) | (wanted * 1.25 / d * 16 > span + 50_000))
