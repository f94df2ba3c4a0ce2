"""memtune import esxtop: a batch CSV in the real PDH-CSV format with several VMs becomes a scenario
whose workloads follow the touched series; unknown and missing columns are reported."""

from __future__ import annotations

import csv
import datetime as dt

import numpy as np
import pytest
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.core.scenario import load_scenario
from memtune.core.simulation import simulate
from memtune.importers.esxtop import to_scenario
from memtune.importers.esxtop_csv import read_batch_csv
from memtune.importers.workload_fit import fit_workload

HOST = "esx01.lab"
N = 120            # samples
STEP = 5           # esxtop -d 5
T = np.arange(N) * STEP


def col(obj, counter):
    return f"\\\\{HOST}\\{obj}\\{counter}"


def series():
    """Touched MB per VM: web constant, db steps at sample 40 and 80, vdi a sinusoid from its mean."""
    rng = np.random.default_rng(1)
    web = 1024 + rng.normal(0, 5, N)                                    # 4 GiB VM, 25 %
    db = np.where(T < 200, 2048.0, np.where(T < 400, 6144.0, 3072.0))   # 8 GiB VM
    vdi = 512 * (1 + 0.5 * np.sin(2 * np.pi * T / 300.0))              # 2 GiB VM, period 5 min
    return web, db, vdi


def write_capture(path, *, machine=True, extra_unknown=True):
    web, db, vdi = series()
    cols = ['(PDH-CSV 4.0) (UTC)(0)']
    values = []
    if machine:
        cols.append(col("Memory", "Machine MBytes"))
        values.append(np.full(N, 32768.0))
        cols.append(col("Memory", "Free MBytes"))
        values.append(np.full(N, 9000.0))
    groups = [("101", "web-01", 4096, web), ("202", "db-01", 8192, db), ("303", "vdi-01", 2048, vdi)]
    for gid, name, memsz, touched in groups:
        g = f"Group Memory({gid}:{name})"
        for counter, v in (("Memory Size MBytes", np.full(N, float(memsz))),
                           ("Memory Granted Size MBytes", np.full(N, memsz * 0.9)),
                           ("Memory Consumed Size MBytes", np.full(N, memsz * 0.7)),
                           ("Target Size MBytes", np.full(N, memsz * 0.8)),
                           ("Touched MBytes", touched),
                           ("Touched Write MBytes", touched * 0.25),
                           ("Swapped MBytes", np.zeros(N)),
                           ("Shared Saved MBytes", np.full(N, 100.0))):
            cols.append(col(g, counter))
            values.append(v)
        cols.append(col(f"Group Cpu({gid}:{name})", "% Used"))
        values.append(np.full(N, 12.5))
    # a resource pool and a group without MEMSZ
    cols.append(col("Group Memory(1:system)", "Memory Size MBytes"))
    values.append(np.zeros(N))
    cols.append(col("Group Memory(404:ghost)", "Touched MBytes"))
    values.append(np.full(N, 10.0))
    if extra_unknown:
        cols.append(col("Group Memory(101:web-01)", "Memory Frobnicated MBytes"))
        values.append(np.ones(N))
    start = dt.datetime(2024, 3, 1, 12, 0, 0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(cols)
        for i in range(N):
            ts = (start + dt.timedelta(seconds=int(T[i]))).strftime("%m/%d/%Y %H:%M:%S")
            w.writerow([ts] + [f"{v[i]:.2f}" for v in values])
    return path


def test_header_and_series_are_parsed(tmp_path):
    cap = read_batch_csv(write_capture(tmp_path / "c.csv"))
    assert cap.host_name == HOST
    assert cap.seconds[-1] == (N - 1) * STEP
    assert set(cap.groups) == {("101", "web-01"), ("202", "db-01"), ("303", "vdi-01"), ("1", "system"),
                               ("404", "ghost")}
    assert cap.groups[("202", "db-01")]["Touched MBytes"][50] == 6144.0
    assert cap.other_objects["Group Cpu"] == 3


def test_scenario_follows_the_series(tmp_path):
    cap = read_batch_csv(write_capture(tmp_path / "c.csv"))
    data, report, observed = to_scenario(cap)
    assert data["host"]["memory"] == "32768 MiB"
    assert data["duration"] == f"{N * STEP}s"
    vms = {v["name"]: v for v in data["vm"]}
    assert set(vms) == {"web-01", "db-01", "vdi-01"}
    assert vms["db-01"]["memory"] == "8192 MiB"
    web, db, vdi = (vms[n]["workload"] for n in ("web-01", "db-01", "vdi-01"))
    assert web["kind"] == "constant" and web["wss"] == pytest.approx(0.25, abs=0.002)
    assert db["kind"] == "phased"
    assert db["wss"] == pytest.approx(0.25)
    assert db["phases"] == [{"at": "200s", "wss": 0.75}, {"at": "400s", "wss": 0.375}]
    assert vdi["kind"] == "diurnal"
    assert float(vdi["period"][:-1]) == pytest.approx(300, rel=0.02)
    assert vdi["wss"] == pytest.approx(0.25, abs=0.005)
    assert vdi["amplitude"] == pytest.approx(0.5, abs=0.02)
    # allocated: granted (0.9 of MEMSZ), raised to the peak working set where that is higher
    assert web["allocated"] == 0.9 and db["allocated"] == 0.9
    assert web["write_fraction"] == pytest.approx(0.25)
    text = "\n".join(report)
    assert "skipped group 1:system" in text and "skipped group 404:ghost: no Memory Size MBytes" in text
    assert "unused Group Memory counter: Memory Frobnicated MBytes (1 groups)" in text
    assert "ignored: Group Cpu (3 columns)" in text
    assert "unused host counters: Free MBytes" in text
    assert any(
        line.startswith("db-01: mean MiB: Memory Consumed Size 5734, Target Size 6554") for line in observed
    )
    assert "missing: Compressed Memory MBytes, Overhead MBytes" in observed[0]


@pytest.mark.slow
def test_cli_scenario_loads_and_simulates(tmp_path):
    csv_path = write_capture(tmp_path / "c.csv")
    out = tmp_path / "imported.toml"
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(csv_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    sc = load_scenario(str(out))
    assert [v.name for v in sc.vms] == ["web-01", "db-01", "vdi-01"]
    assert sc.host.memory == 32 * 2**30 and sc.duration == N * STEP
    assert sc.vms[1].workload.kind == "phased" and sc.vms[1].workload.phases[0].at == 200
    result = simulate(sc.replace(duration=60.0))
    assert [v["name"] for v in result["vms"]] == ["web-01", "db-01", "vdi-01"]


def test_fit_rules():
    t = np.arange(100) * 10.0
    # a sinusoid that does not start at its mean going up cannot be the model's diurnal: phased
    x = 0.3 + 0.1 * np.cos(2 * np.pi * t / 1000.0)
    fit = fit_workload(t, x)
    assert fit.kind == "phased" and "phase" in fit.note
    # noise around a level is constant at the mean
    rng = np.random.default_rng(0)
    noisy = 0.3 + rng.normal(0, 0.2, 100).clip(-0.29, 0.6)
    assert fit_workload(t, noisy).kind == "constant"


@pytest.mark.parametrize(
    "content, message",
    [
        ("a,b\n1,2\n", "not an esxtop batch CSV"),
        ('"(PDH-CSV 4.0) (UTC)(0)","\\\\h\\Memory\\Machine MBytes"\n', "no samples after the header"),
        (
            '"(PDH-CSV 4.0) (UTC)(0)","\\\\h\\Memory\\Machine MBytes"\n"yesterday","1"\n',
            "cannot read timestamp",
        ),
    ],
)
def test_bad_files_are_one_line(tmp_path, content, message):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(p)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and message in res.output, res.output


def test_missing_host_memory_is_reported(tmp_path):
    p = write_capture(tmp_path / "c.csv", machine=False)
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(p)])
    assert res.exit_code == 2 and "Memory\\Machine MBytes (give --host-memory)" in res.output
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(p), "--host-memory", "48 GiB"])
    assert res.exit_code == 0 and 'memory = "49152 MiB"' in res.output


def test_empty_cells_are_counted_not_guessed(tmp_path):
    p = write_capture(tmp_path / "c.csv")
    lines = p.read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    j = header.index(col("Group Memory(101:web-01)", "Touched MBytes"))
    row = next(csv.reader([lines[5]]))
    row[j] = ""
    with open(p, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        for i, line in enumerate(lines):
            w.writerow(row if i == 5 else next(csv.reader([line])))
    cap = read_batch_csv(p)
    assert cap.bad_values == 1 and np.isnan(cap.groups[("101", "web-01")]["Touched MBytes"][4])
    data, report, _ = to_scenario(cap)
    assert "1 empty or non-numeric values skipped" in report
    web = next(v for v in data["vm"] if v["name"] == "web-01")["workload"]
    assert web["kind"] == "constant" and web["wss"] == pytest.approx(0.25, abs=0.002)
