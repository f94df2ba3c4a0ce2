import pytest

from memtune.core.memstate import MemState, min_free, next_state, state_for
from memtune.core.vm import overhead_bytes, shares_value
from memtune.units import GiB, MiB, format_duration, format_size, parse_duration, parse_size


def test_sizes():
    assert parse_size("4 GiB") == 4 * GiB
    assert parse_size("512MiB") == 512 * MiB
    assert parse_size("1.5 TB") == 1_500_000_000_000
    assert parse_size(4096) == 4096
    for bad in ("-1 GiB", "4 parsecs", "", True, [1], -5):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert format_size(6 * GiB) == "6 GiB"


def test_durations():
    assert parse_duration("30m") == 1800
    assert parse_duration("150us") == pytest.approx(150e-6)
    assert parse_duration("8ms") == pytest.approx(8e-3)
    assert parse_duration(2) == 2.0
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert format_duration(150e-6) == "150us"


def test_min_free_sliding_scale():
    # 6 % of 4 GB + 4 % of 8 GB + 2 % of 16 GB + 1 % of 68 GB = 1597.4 MB
    assert min_free(96 * GiB) / MiB == pytest.approx(1597.44, abs=0.01)
    assert min_free(2 * GiB) / MiB == pytest.approx(0.06 * 2048, abs=0.01)
    # the first 28 GB give about 899-901 MB (vSphere 6 guide quotes 899)
    assert 895 < min_free(28 * GiB) / MiB < 905


def test_states_and_hysteresis():
    assert state_for(1.5) is MemState.HIGH
    assert state_for(0.99) is MemState.CLEAR
    assert state_for(0.5) is MemState.SOFT
    assert state_for(0.2) is MemState.HARD
    assert state_for(0.1) is MemState.LOW
    # falls at once
    assert next_state(MemState.HIGH, 0.1, 0.06) is MemState.LOW
    # does not climb back at the threshold itself, only past it plus the margin
    assert next_state(MemState.SOFT, 0.65, 0.06) is MemState.SOFT
    assert next_state(MemState.SOFT, 0.71, 0.06) is MemState.CLEAR
    assert next_state(MemState.LOW, 2.0, 0.06) is MemState.HIGH


def test_overhead_table_and_shares():
    # vSphere 6.7 table points (1 vCPU)
    assert overhead_bytes(1 * GiB) / MiB == pytest.approx(25.90, abs=0.01)
    assert overhead_bytes(4 * GiB) / MiB == pytest.approx(48.64, abs=0.01)
    assert overhead_bytes(16 * GiB) / MiB == pytest.approx(139.62, abs=0.01)
    mid = overhead_bytes(2560 * MiB) / MiB          # halfway between 1 and 4 GB
    assert mid == pytest.approx((25.90 + 48.64) / 2, abs=0.01)
    assert shares_value("normal", 6 * GiB) == 10 * 6144
    assert shares_value("high", 1 * GiB) == 20 * 1024
    assert shares_value(777, 1 * GiB) == 777
