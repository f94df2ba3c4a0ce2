"""What memtune ships for monitoring: Grafana dashboards and provisioning, Prometheus rules and a
scrape configuration, as package data; ``memtune grafana export DIR`` writes them out.

Layout of the package data (and of an export)::

    dashboards/*.json                      Grafana dashboards (built by memtune.monitoring.build)
    provisioning/datasources/memtune.yaml  Grafana datasource (uid memtune-prometheus)
    provisioning/dashboards/memtune.yaml   Grafana dashboard provider
    rules/memtune.rules.yml                Prometheus recording and alerting rules
    prometheus/prometheus.yml              Prometheus scrape jobs and rule_files for memtune
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "dashboards"
PROVISIONING = HERE / "provisioning"
RULES = HERE / "rules" / "memtune.rules.yml"
PROMETHEUS = HERE / "prometheus" / "prometheus.yml"
PARTS = ("dashboards", "provisioning", "rules", "prometheus")


def files() -> list[tuple[str, bytes]]:
    """Every shipped monitoring file as (path relative to the package folder, content)."""
    root = resources.files("memtune.monitoring")
    out: list[tuple[str, bytes]] = []

    def walk(node, rel: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            path = f"{rel}/{child.name}" if rel else child.name
            if child.is_dir():
                walk(child, path)
            elif not child.name.endswith((".py", ".pyc")):
                out.append((path, child.read_bytes()))

    for part in PARTS:
        walk(root / part, part)
    return out
