"""Tuner journal: a killed run resumes with no lost and no repeated evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import DiesAfter, Killed
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from memtune.core.scenario import load_scenario
from memtune.errors import ConfigError, UserError
from memtune.tuner.executors import SerialExecutor
from memtune.tuner.journal import read_journal
from memtune.tuner.loop import JOURNAL, TuneConfig, Tuner


def cfg(scenario, **kw):
    base = dict(budget=8, batch=4, repeats=1, initial_points=4, knobs=("reservation", "limit"), duration=40.0,
                presets=("esxi-default",))
    base.update(kw)
    return TuneConfig(scenario, **base)


def _optimize(tiny_path, out, *args):
    """``memtune optimize TINY --out OUT ARGS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "memtune.cli", "optimize", str(tiny_path), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_resume_replays_journal_and_reruns_only_unfinished(tiny, tmp_path, recording_executor):
    ref = Tuner(cfg(tiny), tmp_path / "ref")
    ref_hist = ref.run()
    out = tmp_path / "cut"
    with pytest.raises(Killed):
        Tuner(cfg(tiny), out, executor=DiesAfter(5)).run()
    with open(out / JOURNAL, "a") as f:
        f.write('{"type":"eval","index":6,"ba')       # a record torn by the kill
    st = read_journal(out / JOURNAL)
    # infeasible points of the second batch are journaled before anything is simulated
    infeasible = {e.index for e in ref_hist if not e.seeds and e.index >= 4}
    assert sorted(st.evals) == sorted({0, 1, 2, 3, 4} | infeasible)
    assert sorted(st.batches) == [0, 1] and st.torn_bytes > 0
    ex = recording_executor
    t2 = Tuner(cfg(tiny), out, resume=True, executor=ex)
    hist = t2.run()
    # the feasible points in flight when killed, nothing else
    assert ex.simulated == [i for i in (5, 6, 7) if i not in infeasible]
    assert [e.index for e in hist] == list(range(8))
    assert [(e.x, e.value) for e in hist] == [(e.x, e.value) for e in ref_hist]
    st = read_journal(out / JOURNAL)
    assert sorted(st.evals) == list(range(8)) and st.resumes == 1 and st.torn_bytes == 0


def test_resume_refuses_other_config_and_existing_out_needs_resume(tiny, tmp_path):
    Tuner(cfg(tiny, budget=4), tmp_path).run()
    with pytest.raises(UserError, match="--resume"):
        Tuner(cfg(tiny, budget=4), tmp_path)
    with pytest.raises(ConfigError, match="seed"):
        Tuner(cfg(tiny, seed=99), tmp_path, resume=True)
    # a larger budget is fine: it continues where the journal ends
    t = Tuner(cfg(tiny, budget=8), tmp_path, resume=True)
    assert len(t.history) == 4


def _evals(path):
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "eval":
            out.append(rec)
    return out


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_and_repeats_nothing(tiny_path, tmp_path):
    """`memtune optimize` killed with SIGKILL while a batch is in flight, then --resume."""
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "memtune.cli",
        "optimize",
        str(tiny_path),
        "--out",
        str(out),
        "--budget",
        "12",
        "--batch",
        "4",
        "--initial-points",
        "8",
        "--optimizer",
        "random",
        "--repeats",
        "1",
        "--duration",
        "40s",
        "--knobs",
        "reservation,limit",
        "--workers",
        "2",
        "--presets",
        "esxi-default",
        "--no-plots",
        "--no-progress",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = out / JOURNAL
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if journal.exists() and len(_evals(journal)) >= 5:  # inside the second batch
                break
            time.sleep(0.01)
        else:
            pytest.fail("the run did not journal 5 evaluations in time")
        children = _children(proc.pid)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the worker pool does not outlive the killed tuner
    assert len(children) >= 2
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{c}") for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{c}") for c in children)
    before = {r["index"]: r for r in _evals(journal)}
    assert 5 <= len(before) < 12
    res = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    after = _evals(journal)
    idx = [r["index"] for r in after]
    assert sorted(idx) == list(range(12))  # none lost, none twice
    for r in after:  # what was journaled before the kill was kept as is
        if r["index"] in before:
            assert r == before[r["index"]]
    st = read_journal(journal)
    assert st.resumes == 1
    # and the whole run equals one never interrupted (run here, serially)
    ref = Tuner(
        cfg(load_scenario(tiny_path), budget=12, initial_points=8, optimizer="random"), tmp_path / "ref"
    )
    ref_vals = {e.index: (e.x, e.value) for e in ref.run()}
    assert {r["index"]: (r["x"], r["value"]) for r in after} == ref_vals
    report = json.loads((out / "report.json").read_text())
    assert report["evaluations"] == 12 and [h["index"] for h in report["history"]] == list(range(12))


class _Lifo(SerialExecutor):
    """Runs the task submitted last first, so results of the batch asked ahead arrive before the
    batch in front of it is complete; dies (like a kill) before evaluation result ``n`` when given
    (the seed probe's results do not count)."""

    def __init__(self, n=None):
        super().__init__()
        self.n = n

    def next_result(self):
        if self.n == 0:
            raise Killed
        self._queue.rotate(1)
        res = super().next_result()
        if self.n is not None and not str(res["index"]).startswith("probe-"):
            self.n -= 1
        return res


@pytest.mark.slow
def test_two_batches_in_flight_resume_as_one_run(tiny, tmp_path, recording_executor):
    """The optimizer asks batch b + 1 while batch b runs; a kill leaves two batches unfinished,
    and completion order does not matter: the resumed run visits the uninterrupted run's points."""
    gp = dict(budget=12, optimizer="gp")
    ref = Tuner(cfg(tiny, **gp), tmp_path / "ref")
    ref_hist = ref.run()
    recs = [json.loads(line) for line in (tmp_path / "ref" / JOURNAL).read_text().splitlines()]
    at = {
        (r["type"], r.get("batch") if r["type"] == "batch" else r.get("index")): n for n, r in enumerate(recs)
    }
    # batch 2 (model-guided) is asked once batch 0 is told, before batch 1's simulations finish
    simulated = [e.index for e in ref_hist if e.seeds]
    assert at[("batch", 1)] < min(at[("eval", i)] for i in range(4))
    assert max(at[("eval", i)] for i in range(4)) < at[("batch", 2)]
    assert at[("batch", 2)] < min(at[("eval", i)] for i in simulated if 4 <= i < 8)
    lifo = Tuner(cfg(tiny, **gp), tmp_path / "lifo", executor=_Lifo()).run()
    assert [(e.x, e.value) for e in lifo] == [(e.x, e.value) for e in ref_hist]
    out = tmp_path / "cut"
    with pytest.raises(Killed):  # evaluations 7, 6, 5, 4 and 3 finish: batch 0 is the one unfinished
        Tuner(cfg(tiny, **gp), out, executor=_Lifo(5)).run()
    st = read_journal(out / JOURNAL)
    infeasible = {e.index for e in ref_hist if not e.seeds}
    assert sorted(st.batches) == [0, 1]
    assert sorted(st.evals) == sorted({3, 4, 5, 6, 7} | (infeasible & set(range(8))))
    ex = recording_executor
    hist = Tuner(cfg(tiny, **gp), out, resume=True, executor=ex).run()
    assert ex.simulated == [i for i in (0, 1, 2, *range(8, 12)) if i not in infeasible]
    assert [(e.x, e.value) for e in hist] == [(e.x, e.value) for e in ref_hist]


# --- one run per output directory, nothing to resume, what differs, records checked on reading -----


@pytest.mark.slow
def test_a_second_run_on_a_locked_directory_is_refused_naming_the_holder(tiny, tiny_path, tmp_path):
    out = tmp_path / "o"
    first = Tuner(cfg(tiny), out)  # holds --out until its journal is closed
    journal = (out / JOURNAL).read_bytes()
    with pytest.raises(UserError, match=rf"is in use by another memtune run \(pid {os.getpid()}\)"):
        Tuner(cfg(tiny), out, resume=True)
    # another process: `memtune optimize --resume` on the same --out, exit 2, one line, journal untouched
    r = _optimize(tiny_path, out, "--resume", "--knobs", "reservation,limit", "--budget", "8", "--no-plots")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        f"memtune: error: --out: {str(out)!r} is in use by another memtune run (pid {os.getpid()});"
        f" wait for it to end or use another directory\n"
    )
    assert (out / JOURNAL).read_bytes() == journal
    first.run()
    first.journal.close()  # the lock goes with the journal
    t = Tuner(cfg(tiny, budget=12), out, resume=True)
    assert len(t.history) == 8
    t.journal.close()


@pytest.mark.slow
def test_two_resumes_at_once_run_each_evaluation_once(tiny_path, tmp_path):
    """The case the lock is for: two `optimize --resume` on one --out started together."""
    out = tmp_path / "o"
    args = [
        sys.executable,
        "-m",
        "memtune.cli",
        "optimize",
        str(tiny_path),
        "--out",
        str(out),
        "--knobs",
        "reservation,limit",
        "--batch",
        "4",
        "--initial-points",
        "4",
        "--duration",
        "40s",
        "--presets",
        "esxi-default",
        "--no-plots",
        "--optimizer",
        "random",
    ]
    subprocess.run([*args, "--budget", "4"], check=True, capture_output=True, timeout=120)
    procs = [
        subprocess.Popen(
            [*args, "--budget", "12", "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is in use by another memtune run (pid " in refused and refused.count("\n") == 1
    st = read_journal(out / JOURNAL)  # resumable: every evaluation once
    assert sorted(st.evals) == list(range(12))
    r = subprocess.run([*args, "--budget", "12", "--resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "make, says",
    [
        (lambda d: d / "typo", "does not exist"),
        (lambda d: d, "holds no journal.jsonl"),
    ],
)
def test_resume_with_nothing_to_resume_is_a_usage_error(tiny_path, tmp_path, make, says):
    (tmp_path / "unrelated.txt").write_text("x")
    out = make(tmp_path)
    r = _optimize(tiny_path, out, "--resume", "--no-plots")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        f"memtune: error: --out: nothing to resume: {str(out)!r} {says} (mistyped? without "
        f"--resume a new run starts there)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated.txt"]  # nothing created


EXTRA_PLUGIN = """
from memtune import hookimpl
from memtune.core.knobs import Knob
from memtune.core.settings import Setting


@hookimpl
def memtune_register_settings(register):
    register(Setting("extra.level", "int", 1, "A setting only this plugin brings.", "test", minimum=0,
                     maximum=3))


@hookimpl
def memtune_register_knobs(register, scenario):
    register(Knob("extra.level", target="host", kind="int", low=0, high=3, help="test knob"))
"""


def test_resume_whose_space_differs_names_the_knobs_and_the_plugin(tiny, tmp_path, monkeypatch):
    (tmp_path / "memtune_extra_knob.py").write_text(EXTRA_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "o"
    knobs = ()  # every knob the loaded plugins bring
    Tuner(cfg(tiny, budget=4, knobs=knobs), out).run()
    with pytest.raises(ConfigError) as err:
        Tuner(cfg(tiny, budget=8, knobs=knobs, plugins=("memtune_extra_knob",)), out, resume=True)
    assert str(err.value) == (
        f"{out / JOURNAL}: space: the search space differs from the journal's: knobs not in the journal's "
        f"run: "
        f"extra.level (plugin 'memtune_extra_knob' from module memtune_extra_knob); resume with the same "
        f"scenario, flags and plugins, or use another --out"
    )


def _first_eval_line(path):
    lines = path.read_text().splitlines()
    n = next(
        i for i, line in enumerate(lines) if json.loads(line)["type"] == "eval" and json.loads(line)["seeds"]
    )
    return lines, n


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("done")
    t = Tuner(cfg(tiny, budget=4), out)
    t.run()
    t.journal.close()
    return out / JOURNAL


BAD_VALUES = st.one_of(
    st.floats(max_value=-1e-12),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(-1),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    where=st.sampled_from(
        ["value", "index", "batch", "elapsed", "stall", "mean_latency", "p99_latency", "seeds", "feasible"]
    ),
    bad=BAD_VALUES,
    vm=st.integers(0, 1),
)
def test_journal_records_out_of_range_are_refused_naming_file_and_line(finished, tmp_path, where, bad, vm):
    """A hand-edited impossible value (a negative stall ...) is an error naming the file and the line."""
    lines, n = _first_eval_line(finished)
    rec = json.loads(lines[n])
    if where in ("stall", "mean_latency", "p99_latency"):
        rec["metrics"][where][vm] = bad
    elif where == "seeds":
        rec["seeds"] = [bad]
    else:
        rec[where] = bad
    assume(not (where == "value" and bad is None and not rec["feasible"]))
    assume(not (where == "feasible" and isinstance(bad, bool)))
    assume(not (where in ("index", "batch") and type(bad) is int and bad >= 0))
    lines[n] = json.dumps(rec)
    path = tmp_path / "journal.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ConfigError,
        match=rf"^{path}: line {n + 1}: evaluation .*\(the journal was edited or "
        rf"damaged\)$",
    ):
        read_journal(path)


@pytest.mark.slow
def test_negative_stall_on_resume_is_one_line_exit_2(finished, tiny_path, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    lines, n = _first_eval_line(finished)
    lines[n] = lines[n].replace('"stall":[', '"stall":[-0.25,', 1)
    (out / JOURNAL).write_text("\n".join(lines) + "\n")
    r = _optimize(tiny_path, out, "--resume", "--no-plots")
    assert r.returncode == 2
    assert r.stderr.startswith(f"memtune: error: {out / JOURNAL}: line {n + 1}: evaluation ")
    assert "metrics.stall[0] is -0.25, must be a finite number within 0..1" in r.stderr
    assert r.stderr.count("\n") == 1
