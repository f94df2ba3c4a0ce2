"""`memtune plugin new NAME` writes a package that installs and whose own test passes."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.errors import UserError
from memtune.scaffold import names, render


def test_names_follow_python_packaging_conventions():
    assert names("nvme-cache") == {
        "name": "nvme_cache",
        "module": "memtune_nvme_cache",
        "dist": "memtune-nvme-cache",
        "memtune_version": names("x")["memtune_version"],
    }
    for bad in ("9lives", "Upper", "a b", "trailing-", "class", "core", ""):
        with pytest.raises(UserError):
            names(bad)


def test_rendered_package_has_entry_point_one_hookimpl_and_a_test():
    files = render("zero_reclaim")
    assert sorted(files) == [
        ".github/workflows/test.yml",
        ".gitignore",
        "LICENSE",
        "README.md",
        "memtune_zero_reclaim/__init__.py",
        "pyproject.toml",
        "tests/test_zero_reclaim.py",
    ]
    meta = tomllib.loads(files["pyproject.toml"])
    assert meta["project"]["name"] == "memtune-zero-reclaim"
    assert meta["project"]["entry-points"]["memtune"] == {"zero_reclaim": "memtune_zero_reclaim"}
    assert files["memtune_zero_reclaim/__init__.py"].count("\n@hookimpl\ndef ") == 1
    assert "$" not in "".join(files.values()).replace("${{", "").replace('"$MEMTUNE_SPEC"', "")


def test_cli_refuses_bad_names_and_existing_folders(tmp_path):
    r = CliRunner().invoke(main_group, ["plugin", "new", "Bad Name", "--dir", str(tmp_path)])
    assert (
        r.exit_code == 2
        and r.output.startswith("memtune: error: NAME: plugin names are")
        and r.output.count("\n") == 1
    )
    r = CliRunner().invoke(main_group, ["plugin", "new", "dup", "--dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main_group, ["plugin", "new", "dup", "--dir", str(tmp_path)])
    assert r.exit_code == 2
    assert (
        r.output
        == f"memtune: error: {tmp_path / 'memtune-dup'}: already exists; choose another name or folder\n"
    )


@pytest.mark.slow
def test_scaffolded_package_installs_and_its_test_passes(tmp_path):
    r = CliRunner().invoke(main_group, ["plugin", "new", "demo-tier", "--dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    pkg = tmp_path / "memtune-demo-tier"
    assert f"created {pkg / 'pyproject.toml'}" in r.output
    site = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(pkg),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    assert (site / "memtune_demo_tier" / "__init__.py").exists()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("MEMTUNE_PLUGINS", None)
    env.pop("MEMTUNE_DISABLE_PLUGINS", None)
    # the installed package is found through its entry point and listed by `memtune plugins`
    listing = subprocess.run(
        [sys.executable, "-m", "memtune.cli", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert "demo_tier  0.1.0  (entrypoint: memtune_demo_tier)" in listing.stdout
    test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=pkg,
        timeout=300,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert "2 passed" in test.stdout
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(pkg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lint.returncode == 0, lint.stdout
