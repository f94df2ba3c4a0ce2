"""minFree and the five memory states of vSphere 6+.

minFree is a sliding scale of host memory: 6 % of the first 4 GB, 4 % of the next 8 GB, 2 % of the
next 16 GB and 1 % of the rest (a 96 GB host gets about 1597 MB; the first 28 GB give 899 MB as in
the vSphere 6 resource management guide). The state follows free memory as a share of minFree:
high while free >= 100 %, clear below 100 %, soft below 64 %, hard below 32 %, low below 16 %
(vSphere 6 memory states). Below 400 % the host starts breaking large pages so that their small
pages can be shared. A state is left upward only once free memory is back above the upper
threshold by a hysteresis margin.
"""

from __future__ import annotations

from enum import IntEnum

from memtune.units import GiB


class MemState(IntEnum):
    HIGH = 0
    CLEAR = 1
    SOFT = 2
    HARD = 3
    LOW = 4

    @property
    def label(self) -> str:
        return self.name.lower()


STATE_NAMES = tuple(s.label for s in MemState)
# Lower bound of free memory (share of minFree) for each state; LOW has none.
ENTRY_THRESHOLDS = {MemState.HIGH: 1.00, MemState.CLEAR: 0.64, MemState.SOFT: 0.32, MemState.HARD: 0.16}
LARGE_PAGE_BREAK = 4.00


def min_free(host_bytes: int, pct: float = 0.0) -> int:
    """minFree of a host with ``host_bytes`` of memory: ``pct`` percent of it (``Mem.MemMinFreePct``)
    if set, else the sliding scale (the ESXi default, ``Mem.MemMinFreePct = 0``)."""
    if pct > 0:
        return int(host_bytes * pct / 100.0)
    tiers = ((4 * GiB, 0.06), (8 * GiB, 0.04), (16 * GiB, 0.02))
    rest = float(host_bytes)
    total = 0.0
    for size, pct in tiers:
        part = min(rest, size)
        total += part * pct
        rest -= part
        if rest <= 0:
            break
    total += max(rest, 0.0) * 0.01
    return int(total)


def state_for(free_ratio: float) -> MemState:
    """State with no history: the lowest state whose entry threshold free memory is below."""
    for state in (MemState.HIGH, MemState.CLEAR, MemState.SOFT, MemState.HARD):
        if free_ratio >= ENTRY_THRESHOLDS[state]:
            return state
    return MemState.LOW


def next_state(current: MemState, free_ratio: float, margin: float) -> MemState:
    """Move down at once when free memory falls below a threshold; move up only past threshold + margin."""
    plain = state_for(free_ratio)
    if plain >= current:
        return plain
    # going up: every step up must clear the threshold of the state above by the margin
    state = current
    while state > MemState.HIGH and free_ratio >= ENTRY_THRESHOLDS[MemState(state - 1)] + margin:
        state = MemState(state - 1)
    return state
