"""The audit log: chain format and verifier (property-tested on a real simulated log), HMAC keys,
what the plugin records (policy, state changes, COW breaks, leak suspects, COW storms), appending
runs, and the ``memtune audit`` CLI's exit codes.

Simulations are tiny (2-3 VMs of 1-2 GiB, minutes of simulated time).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from memtune import hookimpl
from memtune.audit import canonical, record_hash, verify_bytes, verify_file
from memtune.audit.chain import FIELDS, GENESIS
from memtune.cli import main_group
from memtune.core.engine import Engine
from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.errors import UserError

TECHNIQUES = ["balloon", "tps", "compression", "swap", "encryption"]


def pressure_scenario(log: Path, **settings) -> object:
    """3 VMs of 1 GiB (same image, 30 % writes) on a 2 GiB host: large pages break, the state
    drops below high, pages are shared and COW-broken, reclamation runs. The sharing scanner runs at
    its fastest (Mem.ShareScanTime 10 minutes): at the default 60 it shares about 30 pages in these
    4 minutes, and whether a write lands on one of them is luck."""
    d = {"name": "tiny-pressure", "duration": "4m", "tick": "2s", "seed": 7, "host": {"memory": "2 GiB"},
         "settings": {"audit.log": str(log), "Mem.ShareScanTime": 10, **settings},
         "workloads": {"w": {"kind": "constant", "allocated": 0.8, "wss": 0.3, "touch_rate": 20000,
                             "write_fraction": 0.3,
                             "content": {"zero": 0.1, "template": 0.4, "duplicate": 0.05, "unique": 0.45}}},
         "vm": [{"name": "vm", "count": 3, "memory": "1 GiB", "workload": "w", "image": "linux"}]}
    return scenario_from_dict(d, "tiny-pressure")


class EventTap:
    """A third-party listener: every event the host announces, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, dict]] = []

    @hookimpl
    def memtune_event(self, host, kind, vm, data):
        self.events.append((kind, vm, dict(data)))


def run(scenario, *, disable=(), extra=(), duration=None):
    pm = build_plugin_manager(entrypoints=False, disable=disable, extra=extra)
    host = build_host(scenario, pm=pm)
    result = Engine(host).run(duration)
    return host, result


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def pressure_run(tmp_path_factory):
    log = tmp_path_factory.mktemp("audit") / "run.jsonl"
    tap = EventTap()
    host, result = run(pressure_scenario(log), extra=[("tap", tap)])
    return log, host, tap


@pytest.fixture(scope="module")
def real_log(pressure_run) -> bytes:
    return pressure_run[0].read_bytes()


# --- format ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_record_format_and_chain(pressure_run):
    log, host, _ = pressure_run
    lines = log.read_bytes().splitlines()
    recs = [json.loads(x) for x in lines]
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    assert recs[0]["prev"] == GENESIS
    for prev_line, line, rec in zip(lines, lines[1:], recs[1:], strict=False):
        assert rec["prev"] == hashlib.sha256(prev_line).hexdigest()
        assert line == canonical(rec).encode()           # keys sorted, no spaces
    for rec in recs:
        assert set(rec) == set(FIELDS)
        body = {k: v for k, v in rec.items() if k != "hash"}
        assert rec["hash"] == hashlib.sha256(canonical(body).encode()).hexdigest()
    assert recs[0]["kind"] == "log-start" and recs[0]["data"]["hmac"] is False
    assert recs[-1]["kind"] == "log-end" and recs[-1]["data"]["records"] == len(recs)
    assert recs[-1]["time"] == pytest.approx(240.0)
    v = verify_file(log)
    assert v.ok and v.records == len(recs) and v.runs == 1 and v.last_seq == len(recs) - 1


@pytest.mark.slow
def test_same_seed_same_log(tmp_path, monkeypatch):
    logs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        run(pressure_scenario(Path("run.jsonl")), duration=130)
        logs.append((tmp_path / name / "run.jsonl").read_bytes())
    assert logs[0] == logs[1] and len(logs[0].splitlines()) > 10


# --- what the plugin records ----------------------------------------------------------------------

def test_policy_and_state_changes_recorded(pressure_run):
    log, host, tap = pressure_run
    recs = records(log)
    policy = [r for r in recs if r["kind"] == "policy"]
    assert len(policy) == 1 and policy[0]["seq"] == 1
    assert policy[0]["data"]["settings"]["Mem.IdleTax"] == 75
    assert set(policy[0]["data"]["vms"]) == set(host.vm_names)
    # every state change the engine announced, in order, with its old and new state
    announced = [(d["old"], d["new"]) for k, _, d in tap.events if k == "state-change"]
    logged = [(r["data"]["old"], r["data"]["new"]) for r in recs if r["kind"] == "state-change"]
    assert len(announced) >= 2 and logged == announced
    assert [r["kind"] for r in recs].count("large-pages-broken") == 1


def test_cow_breaks_and_reclamation_per_vm_match_the_techniques_counts(pressure_run):
    log, host, _ = pressure_run
    recs = records(log)
    pb = host.page_bytes
    cow = np.zeros(host.nvm)
    for r in recs:
        if r["kind"] == "cow-break":
            cow[host.vm_names.index(r["vm"])] += r["data"]["pages"]
    assert cow.sum() > 0
    np.testing.assert_allclose(cow, host.counters["cow_breaks"])
    # sharing announced by the sharing plugin, summed per period: the pages it counted per VM
    shared = np.zeros(host.nvm)
    for r in recs:
        if r["kind"] == "share":
            for name, pages in r["data"]["pages"].items():
                shared[host.vm_names.index(name)] += pages
    assert shared.sum() > 0
    np.testing.assert_allclose(shared, host.counters["tps_shared_pages"])
    # the per-VM state deltas of every period add up to the pages in each plugin state at the end
    for info in host.states:
        if info.owner == "core":
            continue
        total = np.zeros(host.nvm)
        for r in recs:
            if r["kind"] == "reclaim" and r["vm"] is not None:
                total[host.vm_names.index(r["vm"])] += r["data"]["delta_bytes"].get(info.name, 0.0)
        np.testing.assert_allclose(total, host.pages.counts[:, info.code] * pb, err_msg=info.name)
    assert any(r["kind"] == "reclaim" and r["data"]["delta_bytes"].get("shared", 0) > 0 for r in recs)


def leak_scenario(log: Path, **settings):
    d = {"name": "leak", "duration": "30m", "tick": "4s", "seed": 3, "host": {"memory": "8 GiB"},
         "settings": {"audit.log": str(log), **settings},
         "workloads": {
             "steady": {"kind": "constant", "allocated": 0.5, "wss": 0.2, "touch_rate": 20000},
             "leaky": {"kind": "leak", "allocated": 0.3, "wss": 0.2, "touch_rate": 20000, "leak_rate": 0.3},
         },
         "vm": [{"name": "steady", "memory": "2 GiB", "workload": "steady"},
                {"name": "leaky", "memory": "2 GiB", "workload": "leaky"}]}
    return scenario_from_dict(d, "leak")


@pytest.mark.slow
def test_leak_suspect_flagged_for_leak_workload_only(tmp_path):
    log = tmp_path / "leak.jsonl"
    host, _ = run(leak_scenario(log), disable=TECHNIQUES)
    anomalies = [r for r in records(log) if r["kind"] == "anomaly"]
    assert [(r["vm"], r["data"]["anomaly"]) for r in anomalies] == [("leaky", "leak-suspect")]
    a = anomalies[0]["data"]
    # 20 periods of 60 s must be seen first; the window ends at a period boundary
    assert anomalies[0]["time"] >= 21 * 60 and anomalies[0]["time"] % 60 == 0
    # in steady state every leaked page is first touched a fixed delay after the guest allocates it,
    # so consumed memory grows at the workload's leak rate (0.3 of configured memory per hour)
    assert a["growth_per_hour"] == pytest.approx(0.3, rel=0.2)
    assert a["active_growth_bytes"] <= 0.5 * a["consumed_growth_bytes"]


@pytest.mark.slow
def test_short_window_mistakes_first_touch_warm_up_for_a_leak(tmp_path):
    # the default window is what keeps first-touch warm-up from looking like a leak ...
    log = tmp_path / "short.jsonl"
    # (a cold start: VMs fill their memory from nothing, as after a boot)
    run(leak_scenario(log, **{"audit.leak_periods": 6, "audit.leak_steady_ratio": 0.3,
                              "memtune.warm_start": False}),
        disable=TECHNIQUES, duration=1200)
    flagged = {r["vm"] for r in records(log) if r["kind"] == "anomaly"}
    # ... with a 6-period window and a lax ratio the constant VM's warm-up is flagged too
    assert flagged == {"steady", "leaky"}


class CowStorm:
    """A third-party page-sharing stand-in: VM 0 breaks 100 pages per second, VM 1 breaks 10."""

    @hookimpl
    def memtune_tick(self, host, now, dt):
        host.emit("cow-break", 0, pages=100 * dt, bytes=100 * dt * 4096, time=now)
        host.emit("cow-break", 1, pages=10 * dt, bytes=10 * dt * 4096, time=now)


@pytest.mark.slow
def test_cow_storm_threshold(tmp_path):
    log = tmp_path / "storm.jsonl"
    # 100 breaks/s for VM 0, 10/s for VM 1; threshold 50/s
    sc = leak_scenario(log, **{"audit.cow_storm_rate": 50.0})
    run(sc, disable=TECHNIQUES, extra=[("cowstorm", CowStorm())], duration=300)
    recs = records(log)
    storms = [r for r in recs if r["kind"] == "anomaly" and r["data"]["anomaly"] == "cow-storm"]
    assert [r["vm"] for r in storms] == ["steady"]            # once, when it begins
    assert storms[0]["time"] == 60 and storms[0]["data"]["rate_per_s"] == pytest.approx(100.0)
    per_period = [(r["vm"], r["data"]["pages"], r["data"]["events"]) for r in recs
                  if r["kind"] == "cow-break" and r["time"] == 120]
    ticks = 60 / sc.tick                                      # events per 60 s sampling period
    assert per_period == [("steady", 6000.0, ticks), ("leaky", 600.0, ticks)]


def test_admission_refusal_recorded(tmp_path):
    log = tmp_path / "adm.jsonl"
    d = {"name": "adm", "duration": "10s", "tick": "2s", "host": {"memory": "4 GiB"},
         "settings": {"audit.log": str(log)},
         "workloads": {"w": {"allocated": 0.5, "wss": 0.2}},
         "vm": [{"name": "a", "memory": "2 GiB", "reservation": "2 GiB", "workload": "w"},
                {"name": "b", "memory": "2 GiB", "reservation": "2 GiB", "workload": "w"}]}
    pm = build_plugin_manager(entrypoints=False, disable=TECHNIQUES)
    host = build_host(scenario_from_dict(d, "adm"), pm=pm, admission="refuse")
    Engine(host).run()
    recs = records(log)
    assert [r["kind"] for r in recs[:3]] == ["log-start", "admission-refused", "policy"]
    assert recs[1]["vm"] == "b" and "admission control" in recs[1]["data"]["reason"]
    assert verify_file(log).ok


def test_off_by_default_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sc = pressure_scenario(Path("x.jsonl")).replace(settings={})
    host, _ = run(sc, duration=20)
    assert "audit" not in host.plugin_data and list(tmp_path.iterdir()) == []


# --- tamper evidence: property tests on the real log ----------------------------------------------

def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def _join(lines: list[bytes]) -> bytes:
    return b"".join(x + b"\n" for x in lines)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
PROP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.slow
@PROP
@given(data=st.data())
def test_any_field_edit_is_caught(real_log, data):
    lines = _lines(real_log)
    i = data.draw(st.integers(0, len(lines) - 1))
    rec = json.loads(lines[i])
    field = data.draw(st.sampled_from(FIELDS))
    new = data.draw(json_values)
    assume(canonical(new) != canonical(rec[field]))
    rec[field] = new
    lines[i] = canonical(rec).encode()
    v = verify_bytes(_join(lines))
    assert not v.ok and v.line == i + 1 and v.what in ("edited", "bad JSON")


@PROP
@given(data=st.data())
def test_edit_with_rehashed_record_is_caught_by_the_next_prev(real_log, data):
    lines = _lines(real_log)
    i = data.draw(st.integers(0, len(lines) - 2))
    rec = json.loads(lines[i])
    key = data.draw(st.sampled_from(["time", "vm", "data"]))
    rec[key] = data.draw(json_values.filter(lambda x: x != rec[key]))
    assume(canonical(rec[key]) != canonical(json.loads(lines[i])[key]))
    body = {k: v for k, v in rec.items() if k != "hash"}
    rec["hash"] = record_hash(body, None)
    lines[i] = canonical(rec).encode()
    v = verify_bytes(_join(lines))
    assert not v.ok
    if v.what == "bad JSON":        # e.g. vm no longer a string: caught on the record itself
        assert v.line == i + 1
    else:
        assert v.what == "edited" and v.line in (i + 1, i + 2)


@PROP
@given(data=st.data())
def test_any_byte_change_is_caught_on_its_line(real_log, data):
    pos = data.draw(st.integers(0, len(real_log) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != real_log[pos]))
    tampered = real_log[:pos] + bytes([new]) + real_log[pos + 1:]
    v = verify_bytes(tampered)
    assert not v.ok and v.line == real_log[:pos].count(b"\n") + 1


@PROP
@given(data=st.data())
def test_deleting_any_record_is_caught(real_log, data):
    lines = _lines(real_log)
    i = data.draw(st.integers(0, len(lines) - 1))
    v = verify_bytes(_join(lines[:i] + lines[i + 1:]))
    assert not v.ok
    if i == len(lines) - 1:
        assert v.what == "truncated"
    else:
        assert (v.what, v.line, v.seq) == ("dropped", i + 1, i + 1)


@PROP
@given(data=st.data())
def test_swapping_two_records_is_caught(real_log, data):
    lines = _lines(real_log)
    i = data.draw(st.integers(0, len(lines) - 2))
    j = data.draw(st.integers(i + 1, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    v = verify_bytes(_join(lines))
    assert (v.ok, v.what, v.line, v.seq) == (False, "reordered", i + 1, j)


@PROP
@given(data=st.data())
def test_truncation_is_caught(real_log, data):
    cut = data.draw(st.integers(0, len(real_log) - 1))
    v = verify_bytes(real_log[:cut])
    assert not v.ok and v.what == "truncated"
    whole = real_log[:cut].endswith(b"\n") or cut == 0
    assert v.line == real_log[:cut].count(b"\n") + 1
    assert ("partial" in v.detail) != whole


def test_untouched_log_is_accepted(real_log):
    v = verify_bytes(real_log)
    assert v.ok and v.records == len(_lines(real_log))


# --- HMAC -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed_log(tmp_path_factory):
    d = tmp_path_factory.mktemp("keyed")
    key = d / "key"
    key.write_bytes(b"correct horse battery staple\n")
    log = d / "keyed.jsonl"
    run(pressure_scenario(log, **{"audit.key_file": str(key)}), duration=130)
    return log, key


def test_hmac_log_verifies_only_with_its_key(keyed_log, tmp_path):
    log, key = keyed_log
    recs = records(log)
    assert recs[0]["data"]["hmac"] is True and recs[0]["data"]["algorithm"] == "hmac-sha256"
    assert b"correct horse" not in log.read_bytes()
    assert verify_file(log, b"correct horse battery staple").ok
    wrong = verify_file(log, b"another key")
    assert (wrong.ok, wrong.what, wrong.line) == (False, "wrong key", 1)
    with pytest.raises(UserError, match="HMAC-signed"):
        verify_file(log, None)


def test_hmac_edit_rehashed_without_the_key_is_caught(keyed_log):
    log, _ = keyed_log
    lines = _lines(log.read_bytes())
    i = len(lines) // 2
    rec = json.loads(lines[i])
    rec["time"] = rec["time"] + 1.0
    rec["hash"] = record_hash({k: v for k, v in rec.items() if k != "hash"}, None)
    lines[i] = canonical(rec).encode()
    v = verify_bytes(_join(lines), b"correct horse battery staple")
    assert (v.ok, v.what, v.line) == (False, "edited", i + 1)


def test_plain_log_with_a_key_is_a_finding(real_log):
    v = verify_bytes(real_log, b"k")
    assert (v.ok, v.what, v.line) == (False, "not keyed", 1)


def test_key_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMTUNE_AUDIT_KEY", "from-env")
    log = tmp_path / "env.jsonl"
    run(pressure_scenario(log), duration=10)
    assert records(log)[0]["data"]["hmac"] is True
    assert verify_file(log, b"from-env").ok


# --- appending runs -------------------------------------------------------------------------------

@pytest.mark.slow
def test_second_run_continues_the_chain(tmp_path):
    log = tmp_path / "two.jsonl"
    run(pressure_scenario(log), duration=70)
    first = log.read_bytes()
    n1 = len(_lines(first))
    run(pressure_scenario(log), duration=70)
    data = log.read_bytes()
    assert data.startswith(first)
    lines = _lines(data)
    second = json.loads(lines[n1])
    assert second["kind"] == "log-start" and second["seq"] == n1
    assert second["prev"] == hashlib.sha256(lines[n1 - 1]).hexdigest()
    v = verify_bytes(data)
    assert v.ok and v.runs == 2 and v.records == len(lines)


@pytest.mark.slow
def test_appending_to_a_broken_log_is_refused(tmp_path):
    log = tmp_path / "broken.jsonl"
    run(pressure_scenario(log), duration=70)
    lines = _lines(log.read_bytes())
    del lines[1]
    log.write_bytes(_join(lines))
    with pytest.raises(UserError) as err:
        run(pressure_scenario(log), duration=10)
    assert str(err.value).startswith(f"{log}: audit.log: line 2: ") and "dropped" in str(err.value)
    assert _lines(log.read_bytes()) == lines          # nothing was appended


def test_appending_without_the_key_is_refused(keyed_log, tmp_path):
    log = tmp_path / "k.jsonl"
    log.write_bytes(keyed_log[0].read_bytes())
    with pytest.raises(UserError, match="HMAC-signed"):
        run(pressure_scenario(log), duration=10)


# --- CLI ------------------------------------------------------------------------------------------

def cli(*args: str):
    return CliRunner().invoke(main_group, list(args))


def test_cli_verify_exit_codes(pressure_run, tmp_path):
    log = pressure_run[0]
    ok = cli("audit", "verify", str(log))
    assert ok.exit_code == 0 and "intact" in ok.output and ok.output.count("\n") == 2
    lines = _lines(log.read_bytes())
    lines[4], lines[5] = lines[5], lines[4]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_join(lines))
    res = cli("audit", "verify", str(bad))
    assert res.exit_code == 1 and res.output == f"{bad}: line 5 (seq 5): reordered: expected seq 4 here\n"
    bad.write_bytes(log.read_bytes()[:-10])
    res = cli("audit", "verify", str(bad))
    assert res.exit_code == 1 and "truncated" in res.output
    missing = cli("audit", "verify", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "cannot read" in missing.output


def test_cli_verify_key_file(keyed_log, tmp_path):
    log, key = keyed_log
    assert cli("audit", "verify", str(log), "--key-file", str(key)).exit_code == 0
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    res = cli("audit", "verify", str(log), "--key-file", str(wrong))
    assert res.exit_code == 1 and "wrong key" in res.output
    res = cli("audit", "verify", str(log))
    assert res.exit_code == 2 and "HMAC-signed" in res.output
    res = cli("audit", "verify", str(log), "--key-file", str(tmp_path / "nokey"))
    assert res.exit_code == 2 and "--key-file" in res.output


def test_cli_show_filters(pressure_run):
    log, host, _ = pressure_run
    recs = records(log)
    vm = next(r["vm"] for r in recs if r["kind"] == "cow-break")
    res = cli("audit", "show", str(log), "--vm", vm, "--kind", "cow-break", "--json")
    assert res.exit_code == 0
    shown = [json.loads(x) for x in res.output.splitlines()]
    assert shown == [r for r in recs if r["vm"] == vm and r["kind"] == "cow-break"] and shown
    # host-wide records with a per-VM table are about each VM they name
    res = cli("audit", "show", str(log), "--vm", "vm-02", "--kind", "share", "--kind", "policy", "--json")
    shown = [json.loads(x) for x in res.output.splitlines()]
    assert shown == [r for r in recs if r["kind"] == "policy"
                     or (r["kind"] == "share" and "vm-02" in r["data"]["pages"])]
    assert len(shown) >= 2
    res = cli("audit", "show", str(log), "--since", "3m", "--json")
    shown = [json.loads(x)["seq"] for x in res.output.splitlines()]
    assert shown == [r["seq"] for r in recs if r["time"] >= 180]
    table = cli("audit", "show", str(log), "--kind", "state-change")
    rows = table.output.splitlines()
    assert rows[0].split() == ["SEQ", "TIME", "KIND", "VM", "DATA"]
    assert len(rows) == 1 + sum(r["kind"] == "state-change" for r in recs)
    assert cli("audit", "show", "/nonexistent/x.jsonl").exit_code == 2
    assert cli("audit", "show", str(log), "--since", "soon").exit_code == 2


def test_simulate_audit_log_option(tmp_path):
    sc = tmp_path / "sc.toml"
    sc.write_text(
        'name = "t"\nduration = "20s"\ntick = "2s"\n[host]\nmemory = "4 GiB"\n'
        "[workloads.w]\nallocated = 0.5\nwss = 0.2\n"
        '[[vm]]\nname = "a"\nmemory = "1 GiB"\nworkload = "w"\n'
    )
    log = tmp_path / "cli.jsonl"
    res = cli("simulate", str(sc), "--audit-log", str(log))
    assert res.exit_code == 0, res.output
    recs = records(log)
    assert (
        recs[0]["kind"] == "log-start"
        and recs[-1]["kind"] == "log-end"
        and recs[0]["data"]["scenario"] == "t"
    )
    assert cli("audit", "verify", str(log)).exit_code == 0


class QuietSharing:
    """A sharing plugin that announces nothing: from t = 30 s, 100 pages of VM 0 (past what its
    guest uses, so never touched) share 40 frames."""

    @hookimpl
    def memtune_register_page_states(self, register):
        self.code = register("shared", mapped=True, private_frame=False, read_fault=False, write_fault=True)
        self.done = False

    @hookimpl
    def memtune_tick(self, host, now, dt):
        if now >= 30 and not self.done:
            self.done = True
            end = host.pages.base[0] + host.vm_pages[0]
            host.pages.set_state(np.arange(end - 100, end), self.code)
            host.set_host_pool("tps", 40.0)


@pytest.mark.slow
def test_share_derived_from_page_states_without_share_events(tmp_path):
    log = tmp_path / "share.jsonl"
    sc = leak_scenario(log)
    host, _ = run(sc, disable=TECHNIQUES, extra=[("quiet", QuietSharing())], duration=180)
    pb = host.page_bytes
    shares = [r for r in records(log) if r["kind"] == "share"]
    assert len(shares) == 1 and shares[0]["time"] == 60 and shares[0]["vm"] is None  # once, until it changes
    d = shares[0]["data"]
    assert d["derived"] is True and d["shared_bytes"] == {"steady": 100.0 * pb}
    assert (d["frames_bytes"], d["saved_bytes"], d["vms_sharing"]) == (40.0 * pb, 60.0 * pb, 1)


@pytest.mark.slow
def test_keyed_log_appends_with_its_key(tmp_path):
    key = tmp_path / "key"
    key.write_text("k1")
    log = tmp_path / "k.jsonl"
    for _ in range(2):
        run(pressure_scenario(log, **{"audit.key_file": str(key)}), duration=10)
    v = verify_file(log, b"k1")
    assert v.ok and v.runs == 2 and v.keyed
    key.write_text("k2")  # another key cannot continue the chain
    with pytest.raises(UserError, match="line 1: the existing audit log is broken \\(wrong key"):
        run(pressure_scenario(log, **{"audit.key_file": str(key)}), duration=10)


def _rehashed(data: bytes, key: bytes | None, edit) -> bytes:
    """The log with ``edit(record)`` applied to every record and the whole chain re-hashed (with
    ``key``, or plain SHA-256): what someone who can write the file and holds no key can do."""
    out, prev = [], GENESIS
    for raw in _lines(data):
        rec = json.loads(raw)
        edit(rec)
        body = {k: v for k, v in rec.items() if k != "hash"} | {"prev": prev}
        rec = body | {"hash": record_hash(body, key)}
        line = canonical(rec).encode("ascii")
        out.append(line)
        prev = hashlib.sha256(line).hexdigest()
    return _join(out)


def _lower_balloon(rec: dict) -> None:
    if rec["kind"] == "reclaim":
        rec["data"] = {
            k: (0 if isinstance(v, int | float) and not isinstance(v, bool) else v)
            for k, v in rec["data"].items()
        }


def test_a_rehashed_keyless_log_verifies_and_verify_says_that_proves_nothing_more(pressure_run, tmp_path):
    log = pressure_run[0]
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(_rehashed(log.read_bytes(), None, _lower_balloon))
    assert forged.read_bytes() != log.read_bytes()
    res = cli("audit", "verify", str(forged))
    assert res.exit_code == 0  # inherent to a chain without a secret
    intact, proves = res.output.splitlines()
    assert intact.startswith(f"{forged}: intact: ") and "SHA-256 chain" in intact
    assert "it does NOT prove the log is authentic" in proves
    assert "anyone who can write the file can rewrite it and re-hash every record" in proves
    assert "HMAC key kept off the audited host" in proves and "docs/audit.md" in proves


def test_the_same_rewrite_of_a_keyed_log_is_found_without_the_key(keyed_log, tmp_path):
    log, key = keyed_log
    res = cli("audit", "verify", str(log), "--key-file", str(key))
    assert res.exit_code == 0 and "holder of the HMAC key" in res.output.splitlines()[1]
    guessed = tmp_path / "guess"
    guessed.write_bytes(b"not the key")
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(_rehashed(log.read_bytes(), b"not the key", _lower_balloon))
    res = cli("audit", "verify", str(forged), "--key-file", str(key))
    assert (
        res.exit_code == 1
        and res.output.count("\n") == 1
        and ("wrong key" in res.output or "edited" in res.output)
    )
    # stripping the key (a plain re-hash that claims no HMAC) is caught when the verifier gives the key
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(
        _rehashed(
            log.read_bytes(),
            None,
            lambda r: (_lower_balloon(r), r["data"].update(hmac=False) if r["kind"] == "log-start" else None),
        )
    )
    res = cli("audit", "verify", str(plain), "--key-file", str(key))
    assert res.exit_code == 1 and "not keyed" in res.output


def test_audit_docs_show_how_to_run_with_a_key_kept_off_the_host():
    text = (Path(__file__).parent.parent / "docs" / "audit.md").read_text()
    for needle in (
        "audit.key_file",
        "MEMTUNE_AUDIT_KEY",
        "memtune audit verify",
        "--key-file",
        "does not prove",
        "off the audited host",
    ):
        assert needle in text, needle
