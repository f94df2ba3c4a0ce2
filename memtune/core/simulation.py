"""One call to run a scenario: build the plugin manager and host, run the engine, return the report."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from memtune.core.engine import Engine
from memtune.core.host import Host
from memtune.core.plugins import MemtunePluginManager, build_plugin_manager
from memtune.core.scenario import Scenario


def build_host(scenario: Scenario, *, seed: int | None = None, disable: Iterable[str] = (),
               plugins: Iterable[str] = (), pm: MemtunePluginManager | None = None,
               admission: str = "strict") -> Host:
    """A host for ``scenario`` with the default plugins minus ``disable`` plus local ``plugins``."""
    if pm is None:
        pm = build_plugin_manager(disable=tuple(disable) + tuple(scenario.disable), modules=plugins)
    return Host(scenario, pm, seed=seed, admission=admission)


def simulate(scenario: Scenario, *, seed: int | None = None, duration: float | None = None,
             disable: Iterable[str] = (), plugins: Iterable[str] = (),
             pm: MemtunePluginManager | None = None,
             progress: Callable[[float], None] | None = None, admission: str = "strict") -> dict:
    """Run ``scenario`` and return its report (see :mod:`memtune.core.report`)."""
    host = build_host(scenario, seed=seed, disable=disable, plugins=plugins, pm=pm, admission=admission)
    return Engine(host).run(duration, progress=progress)
