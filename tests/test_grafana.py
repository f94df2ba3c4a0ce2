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

ROOT = Path(__file__).resolve().parents[1] / "memtune" / "monitoring"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
PROVISIONED_UID = "memtune-prometheus"
# uids are part of the dashboards' URLs and of links people share: changing one breaks them
STABLE_UIDS = {"host-overview.json": "memtune-host", "vm-drilldown.json": "memtune-vm",
               "tuner.json": "memtune-tuner"}
METRIC = re.compile(r"(?<![:\w])(memtune_[a-zA-Z0-9_]+)")
RECORDED = re.compile(r"\b(memtune:[a-zA-Z0-9_:]+)")
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
    allowed = {"vm", "state", "kind", "le", "pool", "instance", "job", "version", "scenario", "seed",
               "setting"}
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


def test_committed_dashboards_are_what_the_builder_writes():
    from memtune.monitoring.build import DASHBOARDS as BUILT
    from memtune.monitoring.build import render

    for name in BUILT:
        assert (ROOT / "dashboards" / name).read_text() == render(name), (
            f"{name} differs from memtune.monitoring.build: run python -m memtune.monitoring.build"
        )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_recorded_series_come_from_the_rules_file(path):
    rules = yaml.safe_load((ROOT / "rules" / "memtune.rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    used = {m for e in exprs(load(path)) for m in RECORDED.findall(e)}
    assert used <= recorded


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_no_query_adds_hosts_together(path):
    """Every aggregation keeps ``instance``, nothing goes through scalar(), and every panel's legend
    names the instance: with several hosts each gets its own series, never a sum."""
    for p in all_panels(load(path)):
        for t in p.get("targets", []):
            expr = t["expr"]
            assert "scalar(" not in expr, expr
            for m in re.finditer(r"\b(sum|max|min|avg|count)\s*(by\s*\(([^)]*)\))?\s*\(", expr):
                assert m.group(2) and "instance" in m.group(3), f"{p['title']}: {expr}"
            for m in re.finditer(r"\bon\s*\(([^)]*)\)", expr):
                assert "instance" in m.group(1), expr
            assert 'instance=~"$instance"' in expr, expr
            if p["type"] != "table":
                assert "{{instance}}" in t["legendFormat"], f"{p['title']}: legend {t['legendFormat']!r}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_stat_gauge_and_table_panels_are_instant(path):
    for p in all_panels(load(path)):
        if p["type"] in ("stat", "gauge", "table", "bargauge"):
            assert all(t["instant"] and not t["range"] for t in p["targets"]) or p["type"] == "bargauge", p[
                "title"
            ]
        if p["type"] in ("stat", "gauge", "table"):
            assert all(t["instant"] for t in p["targets"]), p["title"]


def test_host_variable_lists_only_hosts_and_drilldown_starts_on_top_10():
    host = load(ROOT / "dashboards" / "host-overview.json")
    var = {v["name"]: v for v in host["templating"]["list"]}
    # memtune_host_memory_bytes comes only from memtune serve, never from the tuner
    assert var["instance"]["query"]["query"] == "label_values(memtune_host_memory_bytes, instance)"
    assert var["instance"]["includeAll"] and var["instance"]["multi"]
    rows = [p for p in host["panels"] if p["type"] == "row"]
    assert any(r.get("repeat") == "instance" for r in rows)
    titles = {p["title"] for p in host["panels"]}
    assert {"Top 10 VMs by stall", "Top 10 VMs by reclaimed memory", "Hosts"} <= titles
    vm = {v["name"]: v for v in load(ROOT / "dashboards" / "vm-drilldown.json")["templating"]["list"]}["vm"]
    assert vm["query"]["query"].startswith("query_result(topk(10, ")
    assert vm["includeAll"] and vm["current"]["value"] == ["$__all"]
    tuner = {v["name"]: v for v in load(ROOT / "dashboards" / "tuner.json")["templating"]["list"]}
    assert "memtune_tuner_" in tuner["instance"]["query"]["query"]


def test_memory_states_have_value_mappings_and_free_memory_has_minfree_thresholds():
    host = load(ROOT / "dashboards" / "host-overview.json")
    by_title = {p["title"]: p for p in all_panels(host)}
    mapping = by_title["Memory state"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert [mapping[str(i)]["text"] for i in range(5)] == ["high", "clear", "soft", "hard", "low"]
    assert mapping["4"]["color"] == "red" and mapping["0"]["color"] == "green"
    steps = by_title["Free memory / minFree"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 0.16, 0.32, 0.64, 1.0]


def test_grafana_export_writes_the_shipped_files_and_keeps_changed_ones(tmp_path):
    from click.testing import CliRunner

    from memtune.cli import main_group

    out = tmp_path / "mon"
    r = CliRunner().invoke(main_group, ["grafana", "export", str(out)])
    assert r.exit_code == 0, r.output
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [
        "dashboards/host-overview.json",
        "dashboards/tuner.json",
        "dashboards/vm-drilldown.json",
        "prometheus/prometheus.yml",
        "provisioning/dashboards/memtune.yaml",
        "provisioning/datasources/memtune.yaml",
        "rules/memtune.rules.yml",
    ]
    assert (out / "rules" / "memtune.rules.yml").read_bytes() == (
        ROOT / "rules" / "memtune.rules.yml"
    ).read_bytes()
    config = yaml.safe_load((out / "prometheus" / "prometheus.yml").read_text())
    assert (out / "prometheus" / config["rule_files"][0]).resolve() == (
        out / "rules" / "memtune.rules.yml"
    ).resolve()
    # a file the user changed is kept (exit 2, one line naming it) unless --force
    (out / "rules" / "memtune.rules.yml").write_text("# mine\n")
    r = CliRunner().invoke(main_group, ["grafana", "export", str(out)])
    assert r.exit_code == 2 and "memtune.rules.yml" in r.output and "--force" in r.output
    assert (out / "rules" / "memtune.rules.yml").read_text() == "# mine\n"
    r = CliRunner().invoke(main_group, ["grafana", "export", str(out), "--force"])
    assert r.exit_code == 0 and (out / "rules" / "memtune.rules.yml").read_text() != "# mine\n"
