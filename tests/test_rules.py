"""The Prometheus rules file: ``promtool check rules`` and the ``promtool test rules`` unit tests
(tests/rules/*.test.yml: input series for two hosts, the alerts and recorded values expected)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from memtune.monitoring import RULES

PROMTOOL = shutil.which("promtool")
TESTS = sorted((Path(__file__).parent / "rules").glob("*.test.yml"))
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing (Debian package 'prometheus'; scripts/test installs it)"
)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_check_rules():
    r = run("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.slow
@needs_promtool
@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_promtool_rule_unit_tests(path):
    r = run("test", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_unit_test_that_fires_it():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {
        "MemtuneHostHardOrLowState",
        "MemtuneFreeBelowMinFree",
        "MemtuneVMStallHigh",
        "MemtuneBalloonAtCap",
        "MemtuneSwapInSustained",
        "MemtuneSharingCollapsed",
    } <= alerts
    fired = set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            fired |= {t["alertname"] for t in test.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts <= fired


def test_every_rule_keeps_instance_apart():
    """Aggregations name instance (and job): one Prometheus, several hosts, no sum across them."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for by in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
                assert {"instance", "job"} <= {x.strip() for x in by.split(",")}, rule["expr"]
            assert "without (instance" not in rule["expr"]
