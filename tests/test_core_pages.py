"""PageTable.pick_random: distinct pages of the allowed states, grouped by VM, from the rank window
asked for, drawn or listed, and a window that wraps (shift / wrap)."""

from __future__ import annotations

import numpy as np

from memtune.core.pages import FREE, RESIDENT, PageStates, PageTable


def table(npages=(1000, 1000)) -> PageTable:
    pt = PageTable(np.array(npages), PageStates(), scale=1)
    pt.set_state(np.arange(pt.total), RESIDENT)
    return pt


def test_distinct_allowed_pages_grouped_by_vm_inside_the_window():
    pt = table()
    pt.set_state(np.arange(0, 1000, 2), FREE)                   # VM 0: every other page free
    allowed = np.zeros(256, dtype=bool)
    allowed[RESIDENT] = True
    rng = np.random.default_rng(1)
    got = pt.pick_random(rng, np.array([100, 300]), allowed, lo=np.array([200, 0]), hi=np.array([800, 400]))
    vm = pt.vm[got]
    assert np.unique(got).size == got.size and (np.diff(vm) >= 0).all()
    assert np.bincount(vm).tolist() == [100, 300]
    rank = got - pt.base[vm]
    assert (pt.state[got] == RESIDENT).all()
    assert ((rank >= np.array([200, 0])[vm]) & (rank < np.array([800, 400])[vm])).all()
    # asking for more than the window holds gives all of it (VM 0: 300 resident pages in [200, 800))
    got = pt.pick_random(rng, np.array([1000, 0]), allowed, lo=np.array([200, 0]), hi=np.array([800, 0]))
    assert np.sort(got).tolist() == list(range(201, 800, 2))


def test_a_window_that_wraps():
    """Positions [lo, hi) counted from rank `shift` round the first `wrap` ranks: with shift 900 and
    wrap 1000, positions [0, 200) are ranks 900..999 and 0..99, positions [200, 1000) the rest."""
    pt = table()
    allowed = np.zeros(256, dtype=bool)
    allowed[RESIDENT] = True
    rng = np.random.default_rng(2)
    shift, wrap = np.array([900, 900]), np.array([1000, 1000])
    for want in (np.array([50, 50]), np.array([200, 200])):            # drawn, then listed
        got = pt.pick_random(rng, want, allowed, hi=np.array([200, 200]), shift=shift, wrap=wrap)
        rank = got - pt.base[pt.vm[got]]
        assert got.size == want.sum() and np.unique(got).size == got.size
        assert ((rank >= 900) | (rank < 100)).all() and (rank >= 900).any() and (rank < 100).any()
    got = pt.pick_random(rng, np.array([800, 0]), allowed, lo=np.array([200, 0]), hi=np.array([1000, 0]),
                         shift=shift, wrap=wrap)
    assert np.sort(got).tolist() == list(range(100, 900))
