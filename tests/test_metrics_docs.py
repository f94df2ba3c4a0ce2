"""docs/metrics.md documents every family the core collector and the tuner export."""

from __future__ import annotations

from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from memtune.core.engine import Engine
from memtune.core.scenario import scenario_from_dict
from memtune.core.simulation import build_host
from memtune.metrics import TunerMetrics
from memtune.metrics.collector import HostCollector, snapshot_tables
from memtune.metrics.server import DEFAULT_PORT

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def test_every_core_and_tuner_family_is_in_the_reference():
    sc = scenario_from_dict(
        {
            "name": "docs",
            "duration": "2m",
            "tick": "5s",
            "seed": 1,
            "host": {"memory": "6 GiB", "page_scale": 64},
            "vm": [
                {
                    "name": "vm",
                    "count": 4,
                    "memory": "2 GiB",
                    "image": "linux",
                    "workload": {"allocated": 0.9, "wss": 0.5},
                }
            ],
        },
        "<test>",
    )
    host = build_host(sc)
    eng = Engine(host)
    for _ in range(24):
        eng.step(5.0)
    names = {
        t.name + ("_total" if t.type == "counter" else "")
        for t in snapshot_tables(HostCollector(host).snapshot())
    }
    reg = CollectorRegistry()
    TunerMetrics(reg)
    names |= {
        s.name
        for f in text_string_to_metric_families(generate_latest(reg).decode())
        for s in f.samples
        if not s.name.endswith("_created")
    }  # prometheus_client adds these to every Counter
    text = DOC.read_text()
    missing = sorted(n for n in names if f"`{n}" not in text and f"{n}`" not in text)
    assert not missing, f"docs/metrics.md lacks {missing}"


def test_the_scrape_snippet_is_valid_yaml_with_the_default_port():
    text = DOC.read_text()
    snippet = text.split("```yaml", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(snippet)
    job = config["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{DEFAULT_PORT}"]
