"""Tuner: search space, objective, infeasible points, journal resume, report (in this process)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import load_scenario
from memtune.errors import UserError
from memtune.policies import Percent, apply_policy, load_policy
from memtune.tuner.job import tune
from memtune.tuner.loop import JOURNAL, LAG, TuneConfig, Tuner
from memtune.tuner.mapping import assignment_to_policy
from memtune.tuner.objective import Objective, parse_weights
from memtune.tuner.report import summary
from memtune.tuner.space import build_space, group_vms
from memtune.units import GiB


@pytest.fixture(scope="module")
def pm():
    return build_plugin_manager()


def cfg(scenario, **kw):
    base = dict(budget=8, batch=4, repeats=1, initial_points=4, knobs=("reservation", "limit"), duration=40.0,
                presets=("esxi-default",))
    base.update(kw)
    return TuneConfig(scenario, **base)


# --- space -------------------------------------------------------------------------------------

def test_groups_strip_numeric_suffix():
    names = ["web-01", "web-02", "web-03", "web-04", "db-1", "db-2", "solo", "app-x"]
    assert group_vms(names) == {"web": ("web-01", "web-02", "web-03", "web-04"), "db": ("db-1", "db-2"),
                                "solo": ("solo",), "app-x": ("app-x",)}
    assert list(group_vms(names, "vm")) == names
    assert group_vms(names, "all") == {"all": tuple(names)}
    with pytest.raises(UserError, match="--group"):
        group_vms(names, "role")


def test_space_has_core_and_plugin_knobs_per_group(tiny, pm):
    space = build_space(tiny, pm)
    names = space.names
    for n in ("Mem.IdleTax", "web.reservation", "db.reservation", "web.limit", "db.limit", "web.shares",
              "db.shares", "Mem.ShareForceSalting", "Mem.MemZipMaxPct", "web.maxmemctl"):
        assert n in names
    assert space.groups == {"web": ("web-01", "web-02"), "db": ("db-01", "db-02")}
    owners = {d.name: d.knob.owner for d in space.dimensions}
    assert owners["Mem.IdleTax"] == "core" and owners["Mem.ShareForceSalting"] == "tps"


def test_knobs_subset_and_fix(tiny, pm):
    space = build_space(tiny, pm, knobs=("reservation,Mem.IdleTax",), fix=("web.reservation=0.25", "limit=1",
                                                                           "Mem.ShareForceSalting=0"))
    assert space.names == ["Mem.IdleTax", "db.reservation"]
    assert space.fixed == {"web.reservation": 0.25, "web.limit": 1.0, "db.limit": 1.0,
                           "Mem.ShareForceSalting": 0}
    a = space.assignment([40, 0.5])
    assert a == {"Mem.IdleTax": 40, "db.reservation": 0.5, **space.fixed}
    # a size is turned into the share of the group's (equal) VM size
    s2 = build_space(tiny, pm, knobs=("reservation",), fix=("db.reservation=256 MiB",))
    assert s2.fixed == {"db.reservation": 0.25}


@pytest.mark.parametrize("knobs, fix, match", [
    (("nosuch*",), (), "--knobs"),
    ((), ("Mem.IdleTax",), "NAME=VALUE"),
    ((), ("Mem.Bogus=1",), "neither a knob"),
    ((), ("Mem.IdleTax=abc",), "expected a number"),
    ((), ("web.reservation=1.5",), "fraction"),
    ((), ("Mem.ShareForceSalting=7",), "expected one of"),
    (("Mem.IdleTax",), ("Mem.IdleTax=75",), "nothing left to tune"),
])
def test_bad_knobs_and_fix_are_user_errors(tiny, pm, knobs, fix, match):
    with pytest.raises(UserError, match=match):
        build_space(tiny, pm, knobs=knobs, fix=fix)


def test_point_becomes_policy_with_reservation_relative_to_limit(tiny, pm):
    space = build_space(tiny, pm, knobs=("reservation", "limit", "shares", "Mem.IdleTax"))
    a = space.assignment([60, 0.5, 0.25, 0.8, 0.4, 30, 7])
    pol = assignment_to_policy(space, a, "p")
    assert pol.settings == {"Mem.IdleTax": 60}
    rules = {r.name: r for r in pol.vms}
    assert set(rules) == {"web-*", "db-*"}
    # reservation is a share of the limit when both are tuned: 0.5 x 0.8 = 40 %
    assert rules["web-*"].reservation == Percent(40.0) and rules["web-*"].limit == Percent(80.0)
    assert rules["db-*"].reservation == Percent(10.0) and rules["db-*"].limit == Percent(40.0)
    assert rules["web-*"].shares == 30 * 1024 and rules["db-*"].shares == 7 * 1024
    sc = apply_policy(pol, tiny)
    web = sc.vms[0]
    assert web.reservation == round(0.4 * GiB) and web.limit == round(0.8 * GiB)
    assert sc.settings["Mem.IdleTax"] == 60
    # the TOML round-trips through the policies package
    from memtune.policies import parse_policy_text

    assert parse_policy_text(pol.to_toml(), "<t>").vms == pol.vms


# --- objective ---------------------------------------------------------------------------------

def test_objective_share_and_user_weights(tiny, pm):
    groups = group_vms([v.name for v in tiny.vms])
    m = {"stall": [0.1, 0.2, 0.3, 0.4], "mean_latency": [1e-6, 2e-6, 3e-6, 4e-6],
         "p99_latency": [1e-5, 3e-5, 1e-5, 1e-5], "reserved_share": 0.25}
    obj = Objective()
    w = obj.vm_weights(tiny, groups)
    # db VMs have shares = high (20 per MB), web normal (10 per MB): weights 1:1:2:2
    np.testing.assert_allclose(w, [1 / 6, 1 / 6, 1 / 3, 1 / 3])
    assert obj.value(m, w) == pytest.approx(0.1 / 6 + 0.2 / 6 + 0.3 / 3 + 0.4 / 3)
    assert Objective("mean-latency").value(m, w) == pytest.approx((1 + 2) / 6 * 1e-6 + (3 + 4) / 3 * 1e-6)
    uw = Objective("weighted", weights=parse_weights(["web=3", "db-02=0"]))
    w2 = uw.vm_weights(tiny, groups)
    np.testing.assert_allclose(w2, [3 / 7, 3 / 7, 1 / 7, 0])
    assert uw.value(m, w2) == pytest.approx((0.3 + 0.6 + 0.3) / 7)
    # SLO mode: a miss is 1 + worst p99 / SLO (> 1), a hit the reserved share
    assert Objective(slo_p99=20e-6).value(m, w) == pytest.approx(1 + 30 / 20)
    assert Objective(slo_p99=40e-6).value(m, w) == pytest.approx(0.25)


@pytest.mark.parametrize("kw, match", [
    (dict(kind="fast"), "--objective"), (dict(kind="weighted"), "--weight"), (dict(slo_p99=0.0),
                                                                              "--slo-p99")])
def test_objective_rejects_bad_input(kw, match):
    with pytest.raises(UserError, match=match):
        Objective(**kw)
    with pytest.raises(UserError, match="--weight"):
        parse_weights(["web"])


# --- the loop ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_infeasible_points_are_never_simulated_and_told_worse(tiny, tmp_path, recording_executor):
    # limit fixed at 60 %: a reservation above it is invalid; big ones also fail admission control
    ex = recording_executor
    tuner = Tuner(
        cfg(tiny, knobs=("reservation",), fix=("limit=0.6",), optimizer="random", budget=12),
        tmp_path,
        executor=ex,
    )
    hist = tuner.run()
    infeasible = [e for e in hist if not e.feasible]
    feasible = [e for e in hist if e.feasible]
    assert infeasible and feasible
    assert sorted(ex.simulated) == [e.index for e in feasible]
    for e in infeasible:
        assert e.metrics is None and e.value is None and e.seeds == ()
        r, lim = max(e.assignment["web.reservation"], e.assignment["db.reservation"]), 0.6
        sum_res = 2 * 1024 * (e.assignment["web.reservation"] + e.assignment["db.reservation"])
        # reservation above the limit, or reservations + overhead above 3 GiB - minFree (184 MiB)
        assert r > lim or sum_res + 4 * 25.9 > 3072 - 184
    vals = [e.value for e in feasible]
    _, told = tuner.told()
    pen = tuner.penalty()
    assert pen == pytest.approx(max(vals) + max(0.5 * (max(vals) - min(vals)), 0.1 * max(vals)))
    assert all(t == pen for t, e in zip(told, hist, strict=True) if not e.feasible)
    assert pen > max(vals)
    recs = [json.loads(line) for line in (tmp_path / JOURNAL).read_text().splitlines()]
    assert sum(r["type"] == "eval" and not r["feasible"] for r in recs) == len(infeasible)


@pytest.mark.slow
def test_patience_stops_early(tiny, tmp_path):
    t = Tuner(cfg(tiny, budget=40, patience=2, optimizer="random"), tmp_path)
    hist = t.run()
    best = t.best()
    assert t.stop_reason.startswith("no improvement")
    assert len(hist) < 40 and sum(1 for e in hist if e.index > best.index) >= 2
    # stops asking at the first batch boundary after two evaluations without improvement; the
    # LAG batches asked ahead finish
    assert sum(1 for e in hist if e.index > best.index) < 2 + 4 * (1 + LAG)
    assert len(hist) % 4 == 0


@pytest.mark.slow
def test_tune_writes_policy_report_and_plots(tiny, tmp_path):
    report = tune(cfg(tiny, optimizer="random"), tmp_path)
    best = report["best"]
    pol = load_policy(str(tmp_path / "best-policy.toml"))
    assert pol.name == "tuned-tiny-tuner"
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["best"]["point"] == best["point"] and len(on_disk["history"]) == 8
    # the first point is esxi-default's policy (no reservation, no limit)
    assert on_disk["history"][0]["point"] == {
        "web.reservation": 0.0,
        "db.reservation": 0.0,
        "web.limit": 1.0,
        "db.limit": 1.0,
    }
    assert best["value_during_search"] <= on_disk["history"][0]["value"]
    assert on_disk["baseline_value_during_search"] == on_disk["history"][0]["value"]
    r = best["value_during_search"] / on_disk["history"][0]["value"]
    assert (
        f"during the search (evaluation seeds): best {best['value_during_search']:.4f} vs esxi-default "
        f"{on_disk['history'][0]['value']:.4f} = {r:.2f}x" in summary(on_disk)
    )
    base = on_disk["presets"]["esxi-default"]["value"]
    assert on_disk["ratio_to_baseline"] == pytest.approx(best["value"] / base)
    assert {r["vm"] for r in on_disk["vms"]} == {"web-01", "web-02", "db-01", "db-02"}
    row = on_disk["vms"][0]
    assert row["stall_before"] == on_disk["presets"]["esxi-default"]["metrics"]["stall"][0]
    assert row["stall_after"] == best["metrics"]["stall"][0]
    for name in ("convergence.png", "vm-latency.png", "knobs.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the written policy is the best point: re-simulating it on the report seeds gives its value
    from memtune.tuner.config import eval_scenario
    from memtune.tuner.evaluate import EvalTask, report_seeds, run_task

    sc = apply_policy(pol, eval_scenario(load_scenario(tiny.source), 40.0))
    res = run_task(EvalTask("x", sc, report_seeds(7, 1)))
    assert res["metrics"]["stall"] == best["metrics"]["stall"]


@pytest.mark.slow
def test_time_limit_slo_mode_and_forest(tiny, tmp_path):
    def two_hours_pass(ev, tuner):  # the first batch "takes" two hours
        if ev.index == 3:
            tuner.started -= 7200

    t = Tuner(
        cfg(tiny, optimizer="random", time_limit=3600, budget=40), tmp_path / "t", on_eval=two_hours_pass
    )
    # no batch is asked after the first is told; the one asked ahead of it (LAG) finishes
    assert len(t.run()) == 4 * (1 + LAG) and t.stop_reason == "time limit"
    slo = Objective(slo_p99=50e-6)
    t = Tuner(cfg(tiny, optimizer="forest", objective=slo), tmp_path / "s")
    hist = t.run()
    assert len(hist) == 8
    for e in hist:
        worst = max(e.metrics["p99_latency"])
        if worst <= 50e-6:  # meets the SLO: the reserved share of the host
            assert e.value == e.metrics["reserved_share"] <= 1
        else:
            assert e.value == pytest.approx(1 + worst / 50e-6)
    # the baseline point reserves nothing
    assert hist[0].metrics["reserved_share"] == 0.0


# --- space shape and local moves ----------------------------------------------------------------


@pytest.mark.slow
def test_host_default_every_vm_overrides_is_no_dimension(tiny, pm, tmp_path):
    # every group has a maxmemctl dimension, so Mem.CtlMaxPercent (the default for VMs without
    # sched.mem.maxmemctl) would be a dead dimension
    names = build_space(tiny, pm).names
    assert "web.maxmemctl" in names and "db.maxmemctl" in names and "Mem.CtlMaxPercent" not in names
    assert build_space(tiny, pm, knobs=("Mem.CtlMaxPercent",)).names == ["Mem.CtlMaxPercent"]
    assert "Mem.CtlMaxPercent" in build_space(tiny, pm, knobs=("Mem.*",)).names
    assert "Mem.CtlMaxPercent" not in build_space(tiny, pm, fix=("maxmemctl=0.3",)).names
    # the model agrees: with maxmemctl set for every VM, the host cap changes nothing
    from memtune.tuner.evaluate import EvalTask, run_task

    results = []
    for cap in (0, 65):
        t = Tuner(cfg(tiny, knobs=("maxmemctl",), fix=(f"Mem.CtlMaxPercent={cap}",)), tmp_path / str(cap))
        assert t.space.names == ["web.maxmemctl", "db.maxmemctl"]
        _, sc, _ = t._policy_scenario(t.space.assignment([0.3, 0.3]), f"cap{cap}")
        assert sc.settings["Mem.CtlMaxPercent"] == cap
        results.append(run_task(EvalTask(cap, sc, (1,)))["metrics"])
    assert results[0]["stall"] == results[1]["stall"] and results[0]["stall"][0] > 0


def test_blocks_group_a_plugins_knobs_per_host_and_vm_group(tiny, pm):
    space = build_space(tiny, pm)
    blocks = [{space.names[i] for i in b} for b in space.blocks()]
    assert sorted(i for b in space.blocks() for i in b) == list(range(len(space.names)))
    assert {"Mem.ShareForceSalting", "Mem.ShareScanTime", "Mem.ShareRateMax"} in blocks
    assert {"web.reservation", "web.limit", "web.shares"} in blocks
    assert {"web.maxmemctl"} in blocks and {"Mem.IdleTax"} in blocks


@pytest.mark.slow
def test_local_candidates_redraw_whole_blocks_of_a_centre(tiny, pm, tmp_path):
    from skopt.space import Space

    from memtune.tuner.candidates import local_candidates

    space = build_space(tiny, pm)
    blocks = space.blocks()
    t = Tuner(cfg(tiny, knobs=()), tmp_path)
    centre = t.baseline_point()

    def draw(share, seed=0, n=300):
        sk = Space(space.skopt_dimensions())
        local_candidates(sk, [centre], share, 2.0, blocks)
        return sk.rvs(n_samples=n, random_state=np.random.RandomState(seed))

    rows = draw(1.0)
    assert rows == draw(1.0)  # a function of the random state only
    real = [i for i, d in enumerate(space.dimensions) if d.knob.kind == "real"]
    unchanged = 0
    for row in rows:
        changed = {i for i, (v, c) in enumerate(zip(row, centre, strict=True)) if v != c}
        unchanged += not changed  # only when a redrawn switch drew its old value
        for b in blocks:
            moved = [i in changed for i in b if i in real]
            assert all(moved) or not any(moved)  # a block's real knobs move together
    assert unchanged < 0.1 * len(rows)
    # on average about two of the blocks are redrawn
    n_blocks = np.mean([sum(any(row[i] != centre[i] for i in b) for b in blocks) for row in rows])
    assert 1.5 < n_blocks < 3.0
    # with share 0.5 half the candidates are uniform draws, which change (nearly) every real knob
    half = draw(0.5, n=200)
    far = sum(all(row[i] != centre[i] for i in real) for row in half)
    assert 90 <= far <= 110
    # a single draw (skopt's fallback for a duplicate point) stays uniform
    assert len(draw(1.0, n=1)) == 1
    # block_share 0: single-knob moves, about `changes` knobs each (at least one)
    sk = Space(space.skopt_dimensions())
    local_candidates(sk, [centre], 1.0, 1.0, blocks, block_share=0.0)
    rows = sk.rvs(n_samples=300, random_state=np.random.RandomState(2))
    n_knobs = np.mean([sum(v != c for v, c in zip(row, centre, strict=True)) for row in rows])
    assert 0.8 < n_knobs < 1.6
    # the returned setter switches the following draws to uniform ones (tuner.global_every)
    sk = Space(space.skopt_dimensions())
    set_share = local_candidates(sk, [centre], 1.0, 2.0, blocks)
    set_share(0.0)
    rows = sk.rvs(n_samples=50, random_state=np.random.RandomState(1))
    assert sum(all(row[i] != centre[i] for i in real) for row in rows) == 50


@pytest.mark.slow
def test_local_steps_move_a_block_a_little_and_rarely_flip_switches(tiny):
    from skopt.space import Space

    from memtune.tuner.candidates import local_candidates
    from memtune.tuner.mapping import policy_point

    # the built-ins' space only: an installed plugin's blocks change how often each block moves
    space = build_space(tiny, build_plugin_manager(entrypoints=False))
    blocks = space.blocks()
    centre = policy_point(space, tiny, "esxi-default")
    sk = Space(space.skopt_dimensions())
    local_candidates(sk, [centre], 1.0, 1.0, blocks, step=0.1, step_share=1.0)
    rows = sk.rvs(n_samples=4000, random_state=np.random.RandomState(3))
    names = space.names
    cats = [i for i, d in enumerate(space.dimensions) if d.knob.kind == "categorical"]
    nums = [i for i in range(len(names)) if i not in cats]
    # switches keep the centre's value, unless the move changes nothing else (a block of switches
    # only, such as page_reporting.enabled: redrawn)
    for row in rows:
        if any(row[i] != centre[i] for i in nums):
            assert all(row[i] == centre[i] for i in cats)
    # a step is a normal step of 0.1 x the range: on the log scale for the log-uniform scan time
    scan = names.index("Mem.ShareScanTime")
    lo, hi = np.log(10), np.log(600)
    z = [(np.log(row[scan]) - np.log(centre[scan])) / (hi - lo) for row in rows if row[scan] != centre[scan]]
    assert 0.07 < np.std(z) < 0.12 and len(z) > 20
    # a limit of 1.0 (its upper bound) steps down or stays, within a few tenths
    lim = names.index("web.limit")
    moved = [row[lim] for row in rows if row[lim] != centre[lim]]
    assert moved and all(0.6 < v < 1.0 for v in moved)
    # a block's numeric knobs step together (a knob at a bound may stay when clipped)
    res = names.index("web.reservation")
    both = sum((row[res] != centre[res]) for row in rows if row[lim] != centre[lim])
    assert both >= 0.4 * len(moved)
    # steps of 0.05, 0.1, 0.2 and 0.4 x the range, switches of a stepped block redrawn with
    # probability 2 x the step: salting (3 values) changes in 2/3 x mean(0.1, 0.2, 0.4, 0.8) = 25 %
    # of the steps of the TPS block
    sk = Space(space.skopt_dimensions())
    local_candidates(
        sk, [centre], 1.0, 1.0, blocks, step=0.05, step_share=1.0, step_scales=4, flip_per_step=2.0
    )
    rows = sk.rvs(n_samples=2000, random_state=np.random.RandomState(4))
    salting = names.index("Mem.ShareForceSalting")
    tps = [row for row in rows if row[scan] != centre[scan]]
    assert 0.19 < np.mean([row[salting] != centre[salting] for row in tps]) < 0.31
    z = np.abs([(np.log(row[scan]) - np.log(centre[scan])) / (hi - lo) for row in tps])
    # |z| < 0.05: P(|N| < 1, 0.5, 0.25, 0.125) = 0.68, 0.38, 0.20, 0.10 -> 0.34 on average; |z| > 0.3:
    # 0, 0, 0.13, 0.45 -> 0.15
    assert 0.25 < np.mean(z < 0.05) < 0.43 and 0.09 < np.mean(z > 0.3) < 0.21


def test_initial_design_keeps_or_varies_whole_blocks(tiny, tmp_path):
    from memtune.tuner import design as design_module

    t = Tuner(cfg(tiny, knobs=(), initial_points=12), tmp_path)
    base, *design = t.proposer.design()
    assert base == t.baseline_point() and len(design) == 11
    names = t.space.names
    # the shipped presets come right after the baseline, as points of the space
    presets = t.preset_points()
    assert design[: len(presets)] == presets and len(presets) == 3
    design = design[len(presets) :]
    salting = names.index("Mem.ShareForceSalting")
    legacy = presets[0]  # esxi-legacy-tps: the default but for salting 0
    assert legacy[salting] == 0 and base[salting] == 2
    assert [v for j, v in enumerate(legacy) if j != salting] == [
        v for j, v in enumerate(base) if j != salting
    ]
    # no-overcommit-reserve reserves the active sets: web 0.3 and db 0.5 of 1 GiB (relative to
    # limit 1.0), within a MiB
    reserve = presets[2]
    assert reserve[names.index("web.reservation")] == pytest.approx(0.3, abs=1e-3)
    assert reserve[names.index("db.reservation")] == pytest.approx(0.5, abs=1e-3)
    # then each preset with the blocks it leaves at the default taken from another preset
    combined = design_module.combined_presets(t.space.blocks(), base, presets)
    assert design[: len(combined)] == combined and combined
    design = design[len(combined) :]
    # a block of a screening point is the baseline's, one a preset gives it, or the hypercube's
    # (every numeric knob of the block varied; a switch may draw the baseline's value)
    blocks = t.space.blocks()
    choices = design_module.preset_blocks(blocks, base, presets)
    numeric = [d.knob.kind != "categorical" for d in t.space.dimensions]
    for pt in design:
        for b, idx in enumerate(blocks):
            vals = tuple(pt[j] for j in idx)
            assert vals == tuple(base[j] for j in idx) or vals in choices[b] or all(
                pt[j] != base[j] for j in idx if numeric[j])
    kept = np.mean([[v == b for v, b in zip(pt, base, strict=True)] for pt in design])
    assert 0.5 < kept < 0.95


def test_design_combines_the_presets_blocks(tiny, tmp_path, monkeypatch):
    from memtune.tuner import design

    monkeypatch.setattr(design, "default", _override(design.default, {"tuner.design_combine": True,
                                                                      "tuner.design_mix": 0.0}))
    t = Tuner(cfg(tiny, knobs=(), initial_points=12), tmp_path)
    base, *rest = t.proposer.design()
    presets = t.preset_points()
    legacy, mom, reserve = presets
    combined = rest[len(presets):len(presets) + 2]
    names = t.space.names
    tps = [names.index(n) for n in ("Mem.ShareForceSalting", "Mem.ShareScanTime", "Mem.ShareRateMax")]
    res = [names.index(f"{g}.reservation") for g in ("web", "db")]
    # esxi-legacy-tps with no-overcommit-reserve's reservations; mom-like with them too (its sharing
    # and compression kept); no-overcommit-reserve with legacy's sharing (the first preset to change
    # it) is a duplicate of the first and left out
    assert [combined[0][j] for j in tps] == [legacy[j] for j in tps]
    assert [combined[1][j] for j in tps] == [mom[j] for j in tps]
    for pt in combined:
        assert [pt[j] for j in res] == [reserve[j] for j in res]
    assert len(rest) == 11 and rest[len(presets) + 2] not in (base, *presets, *combined)


def test_screening_borrows_the_presets_blocks(tiny, tmp_path, monkeypatch):
    from memtune.tuner import design

    monkeypatch.setattr(design, "default", _override(design.default, {"tuner.design_mix": 1.0,
                                                                      "tuner.keep_baseline": 0.0}))
    t = Tuner(cfg(tiny, knobs=(), initial_points=12), tmp_path)
    base = t.baseline_point()
    blocks = t.space.blocks()
    choices = design.preset_blocks(blocks, base, t.preset_points())
    pts = t.proposer.screening(20, ("design",), ("keep",))
    for b, idx in enumerate(blocks):
        vals = {tuple(p[j] for j in idx) for p in pts}
        if choices[b]:      # every point takes a preset's value for a block some preset changes
            assert vals <= set(choices[b]) and len(vals) == len(choices[b])
        else:               # and the hypercube's for the others
            assert len(vals) > 1


def _override(fn, values):
    return lambda name: values[name] if name in values else fn(name)


def test_bound_jumps_reach_the_bounds(tiny, tmp_path):
    from skopt.space import Space

    from memtune.tuner.candidates import LocalCandidates

    t = Tuner(cfg(tiny, knobs=()), tmp_path)
    sk = Space(t.space.skopt_dimensions())
    centre = t.baseline_point()
    names = t.space.names
    rate = names.index("Mem.ShareRateMax")
    LocalCandidates(sk, [centre], 1.0, 1.0, t.space.blocks(), 1.0, 0.05, 1.0, 4, 2.0, bound_jump=0.5)
    rows = sk.rvs(n_samples=2000, random_state=np.random.RandomState(4))
    moved = [row[rate] for row in rows if row[rate] != centre[rate]]
    at_bound = np.mean([v in (sk.dimensions[rate].low, sk.dimensions[rate].high) for v in moved])
    assert 0.4 < at_bound < 0.75     # half jump, a few large steps are clipped to a bound
    again = Space(t.space.skopt_dimensions())
    LocalCandidates(again, [centre], 1.0, 1.0, t.space.blocks(), 1.0, 0.05, 1.0, 4, 2.0, bound_jump=0.5)
    assert again.rvs(n_samples=2000, random_state=np.random.RandomState(4)) == rows   # same seed, same moves


def test_corners_skip_a_bound_that_thrashed_in_another_group(tiny, tmp_path):
    from memtune.tuner.history import Evaluation

    t = Tuner(cfg(tiny, knobs=()), tmp_path)
    names = t.space.names
    base = t.baseline_point()
    web_limit, db_limit = names.index("web.limit"), names.index("db.limit")
    low = t.space.dimensions[web_limit].knob.low
    thrash = list(base)
    thrash[web_limit] = low
    hist = [Evaluation(0, 0, base, t.space.assignment(base), True, value=0.01),
            Evaluation(1, 0, thrash, t.space.assignment(thrash), True, value=0.5)]
    corners = t.proposer._structured([base], [base], hist)
    assert corners and not any(x[db_limit] == low or x[web_limit] == low for x in corners)
    # before it thrashed, the low limits are corners like any other bound
    corners = t.proposer._structured([base], [base], hist[:1])
    assert any(x[db_limit] == low for x in corners)
