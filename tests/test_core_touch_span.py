"""Touch rounds that stand for more than one tick (``memtune.touch_interval``): when they may and
when the engine keeps drawing touches every tick."""

import pytest
from conftest import engine_scenario

from memtune.core.engine import Engine
from memtune.core.memstate import MemState
from memtune.core.simulation import build_host
from memtune.testing import run_with


def roomy(workload=None, settings=None):
    """Two 2 GiB VMs on a 16 GiB host for 3 minutes (the engine tests' scenario)."""
    vms = [
        {
            "name": "vm",
            "count": 2,
            "memory": "2 GiB",
            "workload": {"allocated": 0.6, "wss": 0.2, **(workload or {})},
        }
    ]
    return engine_scenario(host="16 GiB", vms=vms, duration="3m", settings=settings)


def rounds(engine: Engine) -> list[tuple[float, float]]:
    """Record (start, simulated seconds) of each round of touch draws the engine makes."""
    seen: list[tuple[float, float]] = []
    touch = engine._touch

    def record(now, dt, *args):
        seen.append((engine.host.now, dt))
        return touch(now, dt, *args)

    engine._touch = record
    return seen


def run(sc):
    host = build_host(sc)
    engine = Engine(host)
    seen = rounds(engine)
    return engine.run(), seen


def test_steady_roomy_host_draws_touches_once_per_interval_within_each_sampling_period():
    result, seen = run(roomy())
    assert sum(dt for _, dt in seen) == 180 and all(dt in (5, 10) for _, dt in seen)
    # while the VMs first touch their hot pages a round counts many touches as repeats of one
    # fault, so rounds stay one tick; once that settles, every round spans the 10 s interval
    settled = [r for r in seen if r[0] >= 60]
    assert settled == [(60 + 10 * i, 10) for i in range(12)]
    assert all(t // 60 == (t + dt - 1) // 60 for t, dt in seen)  # no span crosses a period
    per_tick, seen_5 = run(roomy(settings={"memtune.touch_interval": 5.0}))
    assert seen_5 == [(5.0 * i, 5.0) for i in range(36)]
    # a round stands for all the touches of its span: the touch count is the same either way
    touches = [v["touches"] for v in result["vms"]]
    assert touches == pytest.approx([v["touches"] for v in per_tick["vms"]], rel=1e-12)
    assert touches[0] == pytest.approx(180 * 20000)


def test_phase_change_is_drawn_from_its_own_tick():
    _, seen = run(roomy(workload={"kind": "phased", "phases": [{"at": "95s", "wss": 0.4}]}))
    starts = [t for t, _ in seen]
    assert (90, 5) in seen and (95, 10) in seen  # the span from 90 s would cross the change
    assert 85 not in starts


def test_vm_thrashing_against_its_limit_keeps_per_tick_rounds(scenario_of):
    # the 512 MiB limit makes 'lim' refault its hot pages: a round of 2 s already counts about 20 %
    # of its touches of unmapped pages as repeats, so a 10 s span would lose far more than 2 %
    sc = scenario_of(
        [{"name": "lim", "limit": "512 MiB"}, {"name": "free"}],
        memory="8 GiB",
        duration="1m",
        workload={"touch_rate": 3e4},
    )
    host = build_host(sc)
    engine = Engine(host)
    seen = rounds(engine)
    spanned = engine.run()
    assert [dt for _, dt in seen] == [2.0] * 30
    per_tick = run_with(scenario=sc, settings={"memtune.touch_interval": 2.0})
    assert spanned["vms"] == per_tick.result["vms"]


@pytest.mark.parametrize("margin, span", [(0.99, 10.0), (1.01, 5.0)])
def test_span_only_where_free_memory_cannot_reach_the_hard_threshold(margin, span):
    # free memory falling at 1.5 times its last rate over a 10 s span must stay above the hard
    # threshold (0.32 minFree) plus the hysteresis margin, so that no state is skipped
    host = build_host(roomy())
    engine = Engine(host)
    free = host.free_bytes()
    low = (0.32 + host.settings["memtune.state_hysteresis"]) * host.min_free
    fall = margin * (free - low) / (1.5 * 10.0)  # bytes per second
    engine._free_seen = [(-5.0, free + 5.0 * fall), (0.0, free)]
    assert engine._touch_span(5.0) == span
    host.state = MemState.HARD
    assert engine._touch_span(5.0) == 5.0
