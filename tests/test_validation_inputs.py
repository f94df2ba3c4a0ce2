"""Measurements handed in are checked too: an esxtop capture with nan, inf or absurd cells is refused
naming the row and column; `profile --image` refuses files without an end (/dev/zero, a FIFO)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from memtune.cli import main_group


def capture(path, cell: str) -> None:
    g = "\\\\esx\\Group Memory(7:web)"
    header = ["(PDH-CSV 4.0) (UTC)(0)", "\\\\esx\\Memory\\Machine MBytes", f"{g}\\Memory Size MBytes",
              f"{g}\\Touched MBytes"]
    rows = [[f"05/15/2017 06:{m:02d}:00", "16384", "2048", cell if m == 3 else "512"] for m in range(10)]
    path.write_text("\n".join(",".join(f'"{c}"' for c in r) for r in [header, *rows]) + "\n")


@settings(max_examples=60, deadline=None)
@given(
    cell=st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-1e30", "-1", "1e300", "1e13"])
)
def test_import_esxtop_refuses_non_finite_and_out_of_range_cells(tmp_path_factory, cell):
    path = tmp_path_factory.mktemp("cap") / "cap.csv"
    capture(path, cell)
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(path)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"memtune: error: {path}: row 5, column 4 (")
    assert repr(cell) in lines[0]


def test_import_esxtop_still_skips_empty_cells(tmp_path):
    path = tmp_path / "cap.csv"
    capture(path, "")
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(path)])
    assert res.exit_code == 0, res.output
    assert "1 empty or non-numeric values skipped" in res.stderr


@pytest.mark.parametrize("make", ["chardev", "fifo"])
def test_profile_refuses_an_image_without_an_end(tmp_path, make):
    if make == "chardev":
        path = "/dev/zero"
    else:
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    res = CliRunner().invoke(main_group, ["profile", "--image", path])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip().splitlines() == [
        f"memtune: error: {path}: cannot read image: not a regular file or block device (no known size)"
    ]


def test_import_esxtop_marks_a_vm_larger_than_the_host_as_meant(tmp_path):
    """A capture where one VM is configured larger than the host loads: the importer says so."""
    path = tmp_path / "cap.csv"
    capture(path, "512")
    path.write_text(path.read_text().replace('"2048"', '"32768"'))
    out = tmp_path / "s.toml"
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "allow_overcommit = true" in out.read_text()
    res = CliRunner().invoke(main_group, ["simulate", str(out), "--duration", "10s"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("target", ["/dev/zero", "binary"])
def test_a_scenario_profile_must_be_a_regular_text_file(tmp_path, target):
    if target == "binary":
        (tmp_path / "p.toml").write_bytes(b"\xff\xfe\x00garbage")
        target = "p.toml"
    sc = tmp_path / "s.toml"
    sc.write_text(
        f'[host]\nmemory = "8 GiB"\n[[vm]]\nname = "a"\nmemory = "1 GiB"\n'
        f'workload = {{ profile = "{target}" }}\n'
    )
    res = CliRunner().invoke(main_group, ["simulate", str(sc)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"memtune: error: {sc}: vm[0].workload.profile: profile ")
