"""Grafana dashboard JSON, built from data: panels, targets, variables, value mappings.

The dashboards in ``memtune/monitoring/dashboards/`` are written by
``python -m memtune.monitoring.build`` (one module per dashboard: ``host_dashboard``,
``vm_dashboard``, ``tuner_dashboard``, over the shared PromQL pieces of ``queries``); tests/test_grafana.py
checks that the committed files are what the builder writes. Every panel keeps hosts apart: a
query either selects per-host series or aggregates ``by (instance, ...)``, and legends name the
instance, so one Prometheus scraping several ``memtune serve`` never shows their sum.
"""

from __future__ import annotations

from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
INSTANCE = 'instance=~"$instance"'

# memory states as memtune:host_state:code (vSphere 6 states), with the colours esxtop users expect
STATE_COLOURS = (("high", "green"), ("clear", "blue"), ("soft", "yellow"), ("hard", "orange"), ("low", "red"))
STATE_MAPPINGS = [{"type": "value", "options": {str(code): {"text": name, "color": colour, "index": code}
                                                 for code, (name, colour) in enumerate(STATE_COLOURS)}}]
STATE_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": colour, "value": None if code == 0 else code}
        for code, (_, colour) in enumerate(STATE_COLOURS)
    ],
}
# free memory / minFree: the state each share of minFree begins (low < 16 %, hard < 32 %, soft < 64 %,
# clear < 100 %, high above), coloured as the states
FREE_RATIO_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "red", "value": None},
        {"color": "orange", "value": 0.16},
        {"color": "yellow", "value": 0.32},
        {"color": "blue", "value": 0.64},
        {"color": "green", "value": 1.0},
    ],
}


def target(
    expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table: bool = False
) -> dict:
    t: dict[str, Any] = {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "range": not instant,
        "instant": instant,
    }
    if table:
        t["format"] = "table"
    return t


def targets(*items: tuple[str, str], instant: bool = False, table: bool = False) -> list[dict]:
    """``(expr, legend)`` pairs as targets A, B, C ..."""
    return [target(e, lg, chr(ord("A") + i), instant=instant, table=table) for i, (e, lg) in enumerate(items)]


def panel(
    kind: str,
    title: str,
    description: str,
    grid: tuple[int, int, int, int],
    tgts: list[dict],
    *,
    unit: str = "short",
    defaults: dict | None = None,
    options: dict | None = None,
    overrides: list | None = None,
    transformations: list | None = None,
) -> dict:
    x, y, w, h = grid
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": overrides or []},
        "options": options or {},
        "targets": tgts,
    }
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(
    title: str,
    description: str,
    grid: tuple[int, int, int, int],
    tgts: list[dict],
    *,
    unit: str = "short",
    defaults: dict | None = None,
    stack: bool = False,
) -> dict:
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10 if stack else 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults = {"custom": custom, **(defaults or {})}
    return panel(
        "timeseries",
        title,
        description,
        grid,
        tgts,
        unit=unit,
        defaults=defaults,
        options={
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    )


def stat(
    title: str,
    description: str,
    grid: tuple[int, int, int, int],
    tgts: list[dict],
    *,
    unit: str = "short",
    defaults: dict | None = None,
    text_mode: str = "value_and_name",
) -> dict:
    """A stat panel: instant queries only (a range query would show several states at once)."""
    assert all(t["instant"] for t in tgts), title
    return panel(
        "stat",
        title,
        description,
        grid,
        tgts,
        unit=unit,
        defaults=defaults,
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": text_mode,
            "colorMode": "background",
            "graphMode": "none",
        },
    )


def table(
    title: str,
    description: str,
    grid: tuple[int, int, int, int],
    tgts: list[dict],
    *,
    unit: str = "short",
    overrides: list | None = None,
    rename: dict[str, str] | None = None,
    sort: str | None = None,
) -> dict:
    """An instant table, one row per series (labels as columns); several targets are joined on their
    labels."""
    transformations: list[dict] = [{"id": "merge", "options": {}}]
    transformations.append(
        {
            "id": "organize",
            "options": {"excludeByName": {"Time": True, "job": True}, "renameByName": rename or {}},
        }
    )
    if sort:
        transformations.append({"id": "sortBy", "options": {"sort": [{"field": sort, "desc": True}]}})
    return panel(
        "table",
        title,
        description,
        grid,
        tgts,
        unit=unit,
        overrides=overrides,
        options={"showHeader": True, "cellHeight": "sm"},
        transformations=transformations,
    )


def override(field: str, **props: Any) -> dict:
    """Field override by the name a table column has after renaming."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": k, "value": v} for k, v in props.items()],
    }


def row(title: str, y: int, *, repeat: str | None = None) -> dict:
    r: dict[str, Any] = {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
    }
    if repeat:
        r["repeat"] = repeat
    return r


def datasource_variable() -> dict:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"text": "memtune Prometheus", "value": "memtune-prometheus"},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(
    name: str,
    label: str,
    query: str,
    *,
    regex: str = "",
    include_all: bool = True,
    multi: bool = True,
    all_value: str | None = None,
) -> dict:
    """A variable over a Prometheus query; with ``include_all`` it starts on All (every option)."""
    v: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": include_all,
        "multi": multi,
        "sort": 1,
        "hide": 0,
        "regex": regex,
        "options": [],
        "current": {"text": ["All"], "value": ["$__all"]} if include_all else {},
    }
    if all_value is not None:
        v["allValue"] = all_value
    return v


def dashboard(uid: str, title: str, description: str, variables: list[dict], panels: list[dict]) -> dict:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["memtune"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "utc",
        "time": {"from": "now-30m", "to": "now"},
        "refresh": "10s",
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["memtune"],
                "asDropdown": True,
                "title": "memtune",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": panels,
    }
