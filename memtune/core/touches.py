"""A round of touch draws: which pages the guests touched, which of those fault, what comes in
with them, and which pages writes give new content.

``draw_round`` draws the touches of one round and classifies them; ``companions`` finds the pages
a fault draw's other faults brought in; ``write_contents`` gives written pages new content. The
engine (``Engine._touch``) puts these steps together and does the accounting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from memtune.core.contents import rewritten

if TYPE_CHECKING:
    from memtune.core.host import Host
    from memtune.core.pages import PageTable


def rank_runs(base: np.ndarray, first: np.ndarray, span: np.ndarray,
              alloc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pages of runs of ranks: ``span[i]`` ranks from ``first[i]`` on (``first < 2 * alloc``, ``span <
    alloc``), wrapping inside the ``alloc[i]`` allocated ranks of the VM whose pages start at
    ``base[i]``; and where each run starts in the result."""
    first = np.where(first >= alloc, first - alloc, first)
    start = span.cumsum() - span
    pages = (base + first - start).repeat(span) + np.arange(int(span.sum()))
    wrap = (first + span > alloc).nonzero()[0]
    if wrap.size:
        inside = alloc[wrap] - first[wrap]                 # pages before the wrap
        n = span[wrap] - inside
        at = (start[wrap] + inside - (n.cumsum() - n)).repeat(n) + np.arange(int(n.sum()))
        pages[at] -= alloc[wrap].repeat(n)
    return pages, start



@dataclass
class TouchRound:
    """The draws of one round, one entry per draw (``vm``, ``rank``, ``page`` ...), and what the
    engine learns about them (``faults``, ``latency``, ``served``)."""

    vm: np.ndarray              # VM of each draw
    rank: np.ndarray            # its rank inside the VM
    page: np.ndarray            # its page
    write: np.ndarray           # whether the touch writes
    state: np.ndarray           # the page's state when drawn
    weight: np.ndarray          # real 4 KiB touches the draw stands for (lam / draws of its VM)
    read_fault: np.ndarray      # the page's state faults on any touch
    fi: np.ndarray  # indices of the draws that fault (read fault, or a write to a write-fault state)
    pi: np.ndarray  # per-touch probability of the page, where fault or write counting needs it
    faults: np.ndarray  # 4 KiB faults the draw stands for
    latency: np.ndarray  # seconds each faulting touch waited
    served: np.ndarray  # the page is mapped now (a refused allocation leaves it unmapped)


def draw_round(
    host: Host,
    rng: np.random.Generator,
    lam: np.ndarray,
    draws: np.ndarray,
    read_fault: np.ndarray,
    write_fault: np.ndarray,
) -> TouchRound | None:
    """``draws[v]`` touches of each VM drawn from its workload, classified by the state tables."""
    pg = host.pages
    wl = host.workload
    vm, rank = wl.draw(rng, draws)
    if vm.size == 0:
        return None
    page = pg.base[vm] + rank
    write = rng.random(vm.size) < wl.writes[vm]
    state = pg.state[page]
    on_read = read_fault.take(state)
    faulting = on_read | (write & write_fault.take(state))
    pi = np.zeros(vm.size)
    counted = (faulting | write).nonzero()[0]
    pi[counted] = wl.probability(vm[counted], rank[counted])
    return TouchRound(
        vm=vm,
        rank=rank,
        page=page,
        write=write,
        state=state,
        weight=lam[vm] / draws[vm],
        read_fault=on_read,
        fi=faulting.nonzero()[0],
        pi=pi,
        faults=np.zeros(vm.size),
        latency=np.zeros(vm.size),
        served=np.ones(vm.size, dtype=bool),
    )


def write_contents(
    host: Host,
    private: np.ndarray,
    r: TouchRound,
    wr: np.ndarray,
    lam: np.ndarray,
    draws: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Written pages hold new (unique) content, new again at each write (``contents.rewritten``).
    A write draw stands for the distinct 4 KiB pages its writes hit,
    ``scale * (1 - exp(-lam * wf * pi / scale)) / (n * wf * pi)``; in simulated pages that is the
    drawn one and the private pages among the next ranks (its resident neighbours of similar heat).
    ``private`` is the table of states with a frame of their own; ``wr`` says which draws wrote to
    a page that is mapped now."""
    h = host
    pg = h.pages
    page, rank, vm, pi = r.page, r.rank, r.vm, r.pi
    wi = wr.nonzero()[0]
    wi = wi[private.take(pg.state[page[wi]])]
    if wi.size == 0:
        return
    v = vm[wi]
    sel = np.maximum(pi[wi] * h.workload.writes[v], 1e-300)
    scale = pg.scale
    written = -np.expm1(-lam[v] * sel / scale) / (draws[v] * sel)  # 4 KiB pages / scale
    extra = np.floor(written + rng.random(wi.size)).astype(np.int64) - 1
    alloc = np.maximum(h.workload.allocated[v], 1)
    near, _ = rank_runs(pg.base[v], rank[wi] + 1, np.minimum(np.maximum(extra, 0), alloc - 1), alloc)
    near = near[private.take(pg.state[near])]
    for wp in (page[wi], near):
        pg.content[wp] = rewritten(pg.content[wp], wp)


def companions(
    host: Host,
    faults_on: np.ndarray,
    pages: np.ndarray,
    ranks: np.ndarray,
    kinds: np.ndarray,
    extra: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The pages a fault draw's other faults brought in: ``extra[i]`` pages after draw ``i`` in
    rank order (same VM, the other pages of similar heat its touches reached) that the same
    access faults on (``kinds[i]``: 0 a read, 1 a write; any technique's state) and no other
    draw has (``faults_on[kind]``: the table of states that fault on that access). Returns the
    pages and the index of the draw each came from.

    The look goes on past pages that do not fault, over a reach sized by how dense those states
    are in the VM, in at most five rounds of growing reach. Stopping at the next
    ``extra[i]`` ranks brought in only 30 % of the pages charged on `small` (the rest faulted
    again later, so stall grew as touch draws were made fewer).
    """
    h = host
    pg = h.pages
    alloc = np.maximum(h.workload.allocated[pg.vm[pages]], 1)
    base = pages - ranks
    missing = np.minimum(extra, alloc - 1)  # never the drawn page again
    seen = np.zeros(pages.size, dtype=np.int64)  # ranks looked at after each draw
    # share of the VM's allocated ranks in a faulting state, at least 1 in 64
    n_match = (pg.counts[pg.vm[pages]] * faults_on[kinds, : pg.ns]).sum(axis=1)
    density = np.minimum(np.maximum(n_match / alloc, 1.0 / 64), 1.0)
    taken = [pages]
    source: list[np.ndarray] = []
    for reach in (1.25, 2.5, 10.0, 40.0, 160.0):
        draw = ((missing > 0) & (seen < alloc - 1)).nonzero()[0]
        if draw.size == 0:
            break
        a = alloc[draw]
        span = np.minimum(np.ceil(reach * missing[draw] / density[draw]) + 2, a - 1 - seen[draw]).astype(
            np.int64
        )
        cpage, start = rank_runs(base[draw], ranks[draw] + 1 + seen[draw], span, a)
        src = draw.repeat(span)
        keep = _brought_in(pg, faults_on, kinds[src], cpage, taken)
        got = keep.cumsum()  # the first `missing` of them per draw
        before = np.where(start > 0, got[np.maximum(start - 1, 0)], 0)
        keep &= got <= (before + missing[draw]).repeat(span)
        missing -= np.bincount(src[keep], minlength=pages.size)
        seen[draw] += span
        taken.append(cpage[keep])
        source.append(src[keep])
    if not source:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(taken[1:]), np.concatenate(source)


def _brought_in(
    pg: PageTable, faults_on: np.ndarray, kind: np.ndarray, cpage: np.ndarray, taken: list[np.ndarray]
) -> np.ndarray:
    """Mask of the looked-at pages ``cpage`` that fault on their draw's access (``kind``) and come
    in with it: a page comes in once, so the first draw to reach it gets it and the others look
    further."""
    state = pg.state[cpage]
    if kind.size and (kind == kind[0]).all():
        keep = faults_on[kind[0]].take(state)
    else:
        keep = faults_on.reshape(-1).take(kind * faults_on.shape[1] + state)   # kind * MAX_STATES + state
    hit = keep.nonzero()[0]
    keep[hit] = pg.first_seen(cpage[hit]) & ~pg.member(cpage[hit], np.concatenate(taken))
    return keep
