"""The initial design: the baseline, the shipped presets, their blocks combined, then a screening
Latin hypercube around the baseline that also borrows the presets' blocks.

A point of the design is a function of the run seed, the space and the presets only (never of
results), so a resumed or distributed run asks the same design. Why each part is there, and what
it was measured to do, is in docs/tuner.md ("Initial design").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memtune.tuner.defaults import default
from memtune.tuner.evaluate import derive_seed

Point = list[Any]


def preset_blocks(blocks: list[list[int]], base: Point, presets: list[Point]) -> list[list[tuple[Any, ...]]]:
    """Per knob block, the distinct values the presets give it that differ from the baseline's (in
    preset order): the settings someone chose on purpose for that mechanism."""
    out: list[list[tuple[Any, ...]]] = []
    for idx in blocks:
        ref = tuple(base[j] for j in idx)
        vals: list[tuple[Any, ...]] = []
        for p in presets:
            v = tuple(p[j] for j in idx)
            if v != ref and v not in vals:
                vals.append(v)
        out.append(vals)
    return out


def combined_presets(blocks: list[list[int]], base: Point, presets: list[Point]) -> list[Point]:
    """Each preset with the blocks it leaves at the baseline taken from the other presets (the
    first that changes the block): e.g. `mom-like`'s sharing and compression with
    `no-overcommit-reserve`'s reservations. Presets change disjoint mechanisms, so their gains
    may add up; no single preset holds both. Duplicates of each other and of the presets are
    left out."""
    seen = [base, *presets]
    out: list[Point] = []
    for p in presets:
        x = list(p)
        for idx in blocks:
            if all(x[j] == base[j] for j in idx):
                other = next((q for q in presets if any(q[j] != base[j] for j in idx)), None)
                if other is not None:
                    for j in idx:
                        x[j] = other[j]
        if x not in seen:
            seen.append(x)
            out.append(x)
    return out


def screening(dims: list[Any], blocks: list[list[int]], base: Point | None, presets: list[Point],
              seed: int, k: int, design_key: tuple[Any, ...], keep_key: tuple[Any, ...]) -> list[Point]:
    """``k`` Latin-hypercube points drawn from (run seed, ``design_key``). Each knob block keeps the
    baseline's values with probability ``tuner.keep_baseline``, takes one of the presets' values
    for it (:func:`preset_blocks`) with probability ``tuner.design_mix`` when a preset changes it,
    else the hypercube's (drawn from (run seed, ``keep_key``))."""
    from skopt.sampler import Lhs

    if k <= 0:
        return []
    design = [list(p) for p in Lhs(lhs_type="classic", criterion="maximin", iterations=20).generate(
        dims, k, random_state=derive_seed(seed, *design_key))]
    if base is None:
        return design
    rng = np.random.default_rng(derive_seed(seed, *keep_key))
    keep, mix = default("tuner.keep_baseline"), default("tuner.design_mix")
    if default("tuner.block_moves") <= 0:
        blocks = [[j] for j in range(len(dims))]
    choices = preset_blocks(blocks, base, presets)
    u = rng.random((k, len(blocks)))
    pick = rng.integers(0, 1 << 30, size=(k, len(blocks)))
    for i, pt in enumerate(design):
        for b, idx in enumerate(blocks):
            if u[i, b] < keep:
                src: tuple[Any, ...] = tuple(base[j] for j in idx)
            elif u[i, b] < keep + mix and choices[b]:
                src = choices[b][pick[i, b] % len(choices[b])]
            else:
                continue
            for j, v in zip(idx, src, strict=True):
                pt[j] = v
    return design


def initial_design(dims: list[Any], blocks: list[list[int]], base: Point | None, presets: list[Point],
                   seed: int, n: int) -> list[Point]:
    """The first ``n`` points: the baseline, the presets, the presets combined
    (``tuner.design_combine``), then screening points."""
    if base is None:
        return screening(dims, blocks, base, [], seed, n, ("design",), ("keep",))
    head = [base, *presets]
    if default("tuner.design_combine"):
        head += combined_presets(blocks, base, presets)
    head = head[:n]
    return head + screening(dims, blocks, base, presets, seed, n - len(head), ("design",), ("keep",))
