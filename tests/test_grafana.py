"""Dashboard and provisioning structure, and every metric a panel uses is one memtune exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from memtune.core.engine import Engine
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.metrics import TunerMetrics, host_registry

ROOT = Path(__file__).resolve().parents[1] / "grafana"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
PROVISIONED_UID = "memtune-prometheus"
# uids are part of the dashboards' URLs and of links people share: changing one breaks them
STABLE_UIDS = {"host-overview.json": "memtune-host", "vm-drilldown.json": "memtune-vm",
               "tuner.json": "memtune-tuner"}
METRIC = re.compile(r"\b(memtune_[a-zA-Z0-9_]+)")
PROMQL_WORDS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def all_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))          # collapsed rows
    return out


def exprs(dash: dict) -> list[str]:
    found = [t["expr"] for p in all_panels(dash) for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            found.append(q.get("query", ""))
        elif var.get("type") == "query":
            found.append(q)
    return found


def datasource_refs(node, path=""):
    """Every datasource reference anywhere in a dashboard."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                yield path, v
            else:
                yield from datasource_refs(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from datasource_refs(v, f"{path}[{i}]")


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    """Sample names a real host with every default plugin exports, plus the tuner's."""
    # overcommitted 2x with inter-VM sharing: every technique acts, so its counters exist
    sc = scenario_from_dict({
        "name": "grafana-names", "duration": "5m", "tick": "5s", "seed": 11,
        "host": {"memory": "6 GiB", "page_scale": 64},
        "settings": {"Mem.ShareForceSalting": 0, "Mem.ShareScanTime": 10},
        "vm": [{"name": "web", "count": 8, "memory": "1 GiB", "image": "web",
                "workload": {"allocated": 0.9, "wss": 0.3, "touch_rate": 15000}},
               {"name": "db", "count": 4, "memory": "1 GiB", "image": "db", "encrypted": True,
                "workload": {"allocated": 0.95, "wss": 0.5, "touch_rate": 30000}}]}, "<test>")
    host = build_host(sc)
    eng = Engine(host)
    for _ in range(36):
        eng.step(5.0)
    names = {s.name for f in text_string_to_metric_families(generate_latest(host_registry(host)).decode())
             for s in f.samples}
    names |= {f.name for f in text_string_to_metric_families(generate_latest(host_registry(host)).decode())}
    reg = CollectorRegistry()
    TunerMetrics(reg).observe(1.0)
    for f in text_string_to_metric_families(generate_latest(reg).decode()):
        names.add(f.name)
        names |= {s.name for s in f.samples}
    return names


def test_there_are_the_three_dashboards_with_stable_unique_uids():
    assert {p.name for p in DASHBOARDS} == set(STABLE_UIDS)
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for p in DASHBOARDS:
        assert load(p)["uid"] == STABLE_UIDS[p.name]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path):
    dash = load(path)
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["title"].startswith("memtune / ")
    panels = all_panels(dash)
    assert panels
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    for p in panels:
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_datasource_reference_is_the_variable_or_the_provisioned_uid(path):
    refs = list(datasource_refs(load(path)))
    assert refs
    for where, ref in refs:
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        assert uid in ("${datasource}", "$datasource", PROVISIONED_UID), f"{where}: {ref!r}"
        if isinstance(ref, dict):
            assert ref.get("type") == "prometheus", where


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_only_use_metrics_memtune_exports(path, exported_names):
    used = set()
    for expr in exprs(load(path)):
        used |= set(METRIC.findall(expr))
    assert used
    missing = sorted(used - exported_names)
    assert not missing, f"{path.name} uses metrics memtune does not export: {missing}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_grouping_labels_exist(path, exported_names):
    """by/on/without clauses only name labels memtune puts on its series (or Prometheus' own)."""
    allowed = {"vm", "state", "kind", "le", "pool", "instance", "job", "version", "scenario", "seed"}
    for expr in exprs(load(path)):
        for group in PROMQL_WORDS.findall(expr):
            labels = {x.strip() for x in group.split(",") if x.strip()}
            assert labels <= allowed, (path.name, expr)


def test_provisioning_files():
    ds = yaml.safe_load((ROOT / "provisioning" / "datasources" / "memtune.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == PROVISIONED_UID
    assert source["url"].startswith("http")
    prov = yaml.safe_load((ROOT / "provisioning" / "dashboards" / "memtune.yaml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].rstrip("/").endswith("dashboards/memtune")
