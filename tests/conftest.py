"""Shared test fixtures: tiny scenarios with per-VM tables, hosts ready to step, page bookkeeping.

Keep additions small and reusable (a builder, a check); test-specific set-up stays in its test file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from memtune.core.engine import Engine
from memtune.core.host import Host
from memtune.core.scenario import Scenario, scenario_from_dict
from memtune.testing import TINY_WORKLOAD, plugin_manager


def build_scenario(vms: Sequence[dict[str, Any]], *, memory: str = "3 GiB", duration: str = "2m",
                   tick: str = "2s", seed: int = 1, page_scale: int = 16,
                   workload: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                   report_interval: str = "10s") -> Scenario:
    """A validated scenario whose ``vms`` are [[vm]] tables (``name`` required; defaults: 1 GiB, the
    tiny web-like workload of :mod:`memtune.testing` overlaid with ``workload``)."""
    tables = [{"memory": "1 GiB", "workload": "w", "image": "tiny-linux", **v} for v in vms]
    data = {
        "name": "test", "duration": duration, "tick": tick, "seed": seed,
        "report_interval": report_interval,
        "host": {"memory": memory, "page_scale": page_scale},
        "settings": dict(settings or {}),
        "workloads": {"w": {**TINY_WORKLOAD, **(workload or {})}},
        "vm": tables,
    }
    return scenario_from_dict(data, "<test scenario>")


@pytest.fixture
def scenario_of() -> Callable[..., Scenario]:
    """``scenario_of([{"name": "a"}, {"name": "b", "balloon_driver": False}], memory="2 GiB")``."""
    return build_scenario


@pytest.fixture
def host_of() -> Callable[..., tuple[Host, Engine]]:
    """``host, engine = host_of(scenario, disable=["tps"])``: built, plugins configured, not run."""

    def make(scenario: Scenario, *, disable: Sequence[str] = (), seed: int | None = None) -> tuple[Host, Engine]:
        host = Host(scenario, plugin_manager(disable=disable), seed=seed)
        return host, Engine(host)

    return make


def recount(host: Host) -> np.ndarray:
    """Pages per VM and state counted from the state array (what ``pages.counts`` must equal)."""
    pg = host.pages
    flat = np.bincount(pg.vm.astype(np.int64) * pg.ns + pg.state, minlength=host.nvm * pg.ns)
    return flat.reshape(host.nvm, pg.ns)


@pytest.fixture
def pages_conserved() -> Callable[[Host], None]:
    """Check that every page is in exactly one registered state and the per-VM counts are exact."""

    def check(host: Host) -> None:
        pg = host.pages
        assert int(pg.state.max()) < len(host.states)
        np.testing.assert_array_equal(pg.counts, recount(host))
        np.testing.assert_array_equal(pg.counts.sum(axis=1), pg.npages)

    return check
