"""Mem.MemMinFreePct: a fixed minFree instead of the sliding scale, everywhere minFree counts."""

from __future__ import annotations

import pytest

from memtune.core.memstate import min_free
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.errors import AdmissionError
from memtune.policies import apply_policy, policy_from_dict
from memtune.units import GiB, MiB


def sc(settings=None, reservation="0 MiB"):
    return scenario_from_dict({
        "name": "mf", "duration": "1m", "tick": "5s", "seed": 1, "settings": settings or {},
        "host": {"memory": "16 GiB", "page_scale": 64},
        "vm": [{"name": "vm", "count": 2, "memory": "8 GiB", "reservation": reservation,
                "workload": {"allocated": 0.5, "wss": 0.2}}]}, "<test>")


def test_percent_replaces_the_sliding_scale():
    assert min_free(100 * GiB, 2) == 2 * GiB
    assert min_free(100 * GiB, 0) == min_free(100 * GiB)            # 0: sliding scale
    # 16 GiB: 6 % of 4 + 4 % of 8 + 2 % of 4 GiB = 655 MiB by the scale; 6 % = 983 MiB
    assert build_host(sc()).min_free / MiB == pytest.approx(0.06 * 4096 + 0.04 * 8192 + 0.02 * 4096, abs=0.01)
    assert build_host(sc({"Mem.MemMinFreePct": 6})).min_free / MiB == pytest.approx(0.06 * 16384, abs=0.01)


def test_admission_control_keeps_the_larger_minfree_free():
    # 2 x 7.3 GiB reserved (+ overhead) fits 16 GiB minus the sliding scale's 655 MiB ...
    build_host(sc(reservation="7.3 GiB"))
    # ... but not minus 10 % (1638 MiB), in the core and when a policy is applied
    with pytest.raises(AdmissionError):
        build_host(sc({"Mem.MemMinFreePct": 10}, reservation="7.3 GiB"))
    pol = policy_from_dict({"name": "p", "settings": {"Mem.MemMinFreePct": 10}}, "<policy>")
    with pytest.raises(AdmissionError):
        apply_policy(pol, sc(reservation="7.3 GiB"))
