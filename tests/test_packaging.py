"""The package people install: a wheel with the monitoring files, the licence and SPDX metadata; an
sdist with docs and examples; ``python -m memtune``; declared dependency bounds."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            "--sdist",
            "--wheel",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def test_license_is_an_spdx_expression_with_the_apache_text():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert (
        "Apache License" in text
        and "Version 2.0, January 2004" in text
        and "END OF TERMS AND CONDITIONS" in text
    )
    build = PYPROJECT["build-system"]["requires"][0]
    assert build.startswith("setuptools>=") and int(build.split(">=")[1]) >= 77  # PEP 639 expressions


def test_optimizer_stack_has_tested_version_bounds():
    deps = {d.split(">=")[0].split("<")[0].strip(): d for d in PYPROJECT["project"]["dependencies"]}
    for name in ("numpy", "scipy", "scikit-learn", "scikit-optimize"):
        assert ">=" in deps[name] and "<" in deps[name], deps[name]
    assert any(d.startswith("pyyaml") for d in PYPROJECT["project"]["optional-dependencies"]["test"])


@pytest.mark.slow
def test_wheel_holds_the_monitoring_files_and_the_licence(dists):
    wheel, _ = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (
        "memtune/monitoring/dashboards/host-overview.json",
        "memtune/monitoring/dashboards/vm-drilldown.json",
        "memtune/monitoring/dashboards/tuner.json",
        "memtune/monitoring/rules/memtune.rules.yml",
        "memtune/monitoring/prometheus/prometheus.yml",
        "memtune/monitoring/provisioning/datasources/memtune.yaml",
        "memtune/monitoring/provisioning/dashboards/memtune.yaml",
        "memtune/__main__.py",
        "memtune/cli/grafana.py",
        "memtune/scaffold/templates/workflow.yml.tmpl",
        "memtune/core/scenarios/small.toml",
    ):
        assert f in names, f
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = HeaderParser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
    assert meta["License-Expression"] == "Apache-2.0"
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_sdist_holds_docs_examples_tests_and_licence(dists):
    _, sdist = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for f in (
        "LICENSE",
        "README.md",
        "docs/metrics.md",
        "docs/architecture.md",
        "scripts/test",
        "examples/memtune-page-reporting/pyproject.toml",
        "tests/rules/memtune.rules.test.yml",
        "tests/test_prometheus_integration.py",
        "benchmarks/load.py",
        "memtune/monitoring/rules/memtune.rules.yml",
    ):
        assert f in names, f
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


@pytest.mark.slow
def test_python_dash_m_memtune_runs_the_cli():
    r = subprocess.run(
        [sys.executable, "-m", "memtune", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "Usage: memtune" in r.stdout and "grafana" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "memtune", "no-such-command"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
