import numpy as np
import pytest

from memtune.core.allocation import allocation_targets, shares_per_page


def test_equal_shares_no_tax_equal_targets():
    t = allocation_targets(1000.0, np.array([10.0, 10.0]), np.array([0.1, 0.9]), 0.0,
                           np.zeros(2), np.array([800.0, 800.0]))
    assert t == pytest.approx([500.0, 500.0])


def test_idle_tax_moves_memory_to_the_active_vm():
    shares = np.array([10.0, 10.0])
    active = np.array([0.1, 0.9])
    t = allocation_targets(1000.0, shares, active, 0.75, np.zeros(2), np.array([800.0, 800.0]))
    # P proportional to S / (f + k(1-f)), k = 4: idle 1/(0.1+3.6)=0.270, active 1/(0.9+0.4)=0.769
    w = 1 / (active + 4 * (1 - active))
    assert t == pytest.approx(1000 * w / w.sum())
    assert t[1] > 2.5 * t[0]
    # at that point both VMs have the same shares-per-page ratio (min-funding fixed point)
    rho = shares_per_page(shares, t, active, 0.75)
    assert rho[0] == pytest.approx(rho[1])


def test_bounds_reservation_and_cap():
    t = allocation_targets(1000.0, np.array([10.0, 10.0, 10.0]), np.array([0.5, 0.5, 0.5]), 0.75,
                           np.array([600.0, 0.0, 0.0]), np.array([900.0, 100.0, 900.0]))
    assert t[0] >= 600
    assert t[1] <= 100
    assert t.sum() == pytest.approx(1000.0)


def test_not_overcommitted_everyone_gets_cap():
    cap = np.array([100.0, 200.0])
    assert allocation_targets(1000.0, np.ones(2), np.ones(2), 0.75, np.zeros(2), cap) == pytest.approx(cap)
