"""Tuner executors: the same seed gives the same run serially, on 2 local processes and on Dask."""

from __future__ import annotations

import json

import pytest

from memtune.errors import UserError
from memtune.tuner.executors import LocalExecutor, SerialExecutor, make_executor
from memtune.tuner.loop import JOURNAL, TuneConfig, Tuner

# batch 4, budget 8: the first batch is the Latin-hypercube design, the second comes from the GP


def cfg(scenario):
    return TuneConfig(
        scenario,
        budget=8,
        batch=4,
        repeats=2,
        initial_points=4,
        knobs=("reservation", "limit"),
        duration=40.0,
        presets=("esxi-default", "mom-like"),
    )


def _run(tiny, out, executor, early=True):
    """The history and the report's comparison; ``early``: the presets' simulations are submitted
    while the last batch runs (and their results come back among its evaluations)."""
    with executor:
        t = Tuner(cfg(tiny), out, executor=executor, compare_early=early)
        hist = t.run()
        comparison = t.compare(t.best())
    values = {k: (e.get("value"), e.get("metrics")) for k, e in comparison["entries"].items()}
    assert len(values) == 3 and all(v is not None for v, _ in values.values())
    return [(e.index, e.x, e.seeds, e.value, e.metrics) for e in hist] + [values], t


@pytest.fixture(scope="module")
def serial(tiny, tmp_path_factory):
    return _run(tiny, tmp_path_factory.mktemp("serial"), SerialExecutor(), early=False)


@pytest.mark.slow
def test_two_local_workers_give_the_serial_results(tiny, serial, tmp_path):
    ref, _ = serial
    got, t = _run(tiny, tmp_path, LocalExecutor(2, "spawn"))
    assert got == ref
    assert t.executor.describe() == {"executor": "local", "workers": 2, "context": "spawn"}
    # common random numbers: every evaluation runs on the same two seeds (run seed, repeat)
    seeds = [ss for _, _, ss, _, _ in got[:-1] if ss]
    assert seeds and len(set(seeds)) == 1 and len(set(seeds[0])) == 2
    # the journal tells the same story in ask order, whatever order the workers finished in
    evals = [json.loads(x) for x in (tmp_path / JOURNAL).read_text().splitlines()]
    evals = sorted((r for r in evals if r["type"] == "eval"), key=lambda r: r["index"])
    assert [(r["index"], r["value"]) for r in evals] == [(i, v) for i, _, _, v, _ in ref[:-1]]


@pytest.mark.integration
def test_dask_local_cluster_gives_the_serial_results(tiny, serial, tmp_path):
    distributed = pytest.importorskip("distributed")
    ref, _ = serial
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cl:
        ex = make_executor(dask_scheduler=cl.scheduler_address)
        assert ex.name == "dask" and ex.workers == 2
        got, _ = _run(tiny, tmp_path, ex)
    assert got == ref


@pytest.mark.slow
def test_bad_worker_count_and_unreachable_scheduler():
    with pytest.raises(UserError, match="--workers"):
        make_executor(0)
    with pytest.raises(UserError, match="--dask-scheduler"):
        from memtune.tuner.executors import DaskExecutor

        DaskExecutor("tcp://127.0.0.1:9", timeout=1.0)
