"""Helpers for testing memtune plugins: a tiny scenario, one-call runs, with/without comparisons.

A plugin test usually reads::

    from memtune.testing import compare, tiny_scenario

    def test_my_plugin_saves_memory():
        cmp = compare(my_plugin, tiny_scenario(duration="4m"))
        assert cmp.with_plugin.total("consumed") < cmp.without.total("consumed")

Plugins may be given as modules, ``"module.path"`` strings, ``(name, object)`` pairs or objects
with hook methods. A module is named by its entry point in the ``memtune`` group when its package
is installed, else by the last part of its path; an object by its ``name`` attribute, else its
class name in lower case.
Runs load the built-in plugins but not installed entry points (so a test sees only what it asks
for); pass ``entrypoints=True`` to include them.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.core.engine import Engine
from memtune.core.host import Host
from memtune.core.knobs import Knob
from memtune.core.plugins import DEFAULT_PLUGINS, MemtunePluginManager, build_plugin_manager
from memtune.core.registry import registry_of
from memtune.core.scenario import Scenario, scenario_from_dict
from memtune.plugin import RESIDENT, hookimpl

__all__ = ["Comparison", "FixedLatencyState", "Run", "collect_knobs", "collect_metrics", "compare",
           "plugin_manager", "run_with", "tiny_scenario"]

# A small web-like guest: 80 % of memory allocated, a 25 % working set taking 90 % of touches.
TINY_WORKLOAD: dict[str, Any] = {
    "kind": "constant",
    "allocated": 0.8,
    "wss": 0.25,
    "hot_share": 0.9,
    "touch_rate": 20000,
    "write_fraction": 0.2,
    "content": {"zero": 0.1, "template": 0.3, "duplicate": 0.05, "unique": 0.55},
    "compressibility": {"le_1k": 0.25, "le_2k": 0.35, "le_3k": 0.2, "worse": 0.2},
}


def tiny_scenario(*, name: str = "tiny", memory: str = "2 GiB", vms: int = 4, vm_memory: str = "1 GiB",
                  workload: dict[str, Any] | None = None, vm: dict[str, Any] | None = None,
                  duration: str = "2m", tick: str = "2s", warmup: str = "0s", seed: int = 1,
                  page_scale: int | str = 16, settings: dict[str, Any] | None = None,
                  disable: Sequence[str] = (), report_interval: str = "30s") -> Scenario:
    """A scenario small enough for unit tests (well under a second to run).

    Default: a 2 GiB host with four 1 GiB VMs of one image, each allocating 80 % of its memory
    (1.6 x overcommitted, like the built-in ``small``), so within the two minutes the host leaves
    the high state (with the core alone it reaches low). Pass ``memory="8 GiB"`` for a host that is
    never under pressure. ``workload`` entries
    override :data:`TINY_WORKLOAD`; ``vm`` adds per-VM fields (``reservation``, ``encrypted`` ...);
    ``page_scale`` 16 makes one simulated page 64 KiB. The scenario is validated like a TOML file.
    """
    data: dict[str, Any] = {
        "name": name,
        "duration": duration,
        "tick": tick,
        "warmup": warmup,
        "seed": seed,
        "report_interval": report_interval,
        "host": {"memory": memory, "page_scale": page_scale},
        "settings": dict(settings or {}),
        "plugins": {"disable": list(disable)},
        "workloads": {"tiny": {**TINY_WORKLOAD, **(workload or {})}},
        "vm": [{"name": "vm", "count": vms, "memory": vm_memory, "workload": "tiny",
                "image": "tiny-linux", **(vm or {})}],
    }
    return scenario_from_dict(data, f"<tiny_scenario {name}>")


PluginLike = types.ModuleType | str | tuple[str, object] | object


def _named(plugin: PluginLike) -> tuple[str, object]:
    if isinstance(plugin, tuple):
        return plugin[0], plugin[1]
    if isinstance(plugin, str):
        plugin = importlib.import_module(plugin)
    if isinstance(plugin, types.ModuleType):
        from importlib.metadata import entry_points

        # an installed package's module goes by its entry-point name, as when memtune loads it
        for ep in entry_points(group="memtune"):
            if ep.value == plugin.__name__:
                return ep.name, plugin
        return plugin.__name__.rsplit(".", 1)[-1], plugin
    name = getattr(plugin, "name", None) or type(plugin).__name__.lower()
    return str(name), plugin


def builtin_technique_names() -> list[str]:
    """Names of the built-in technique plugins (everything built in except the core)."""
    return [n for n in (p.rsplit(".", 1)[-1] for p in DEFAULT_PLUGINS if p != "memtune.core.builtin")]


def plugin_manager(*plugins: PluginLike, disable: Iterable[str] = (), builtins: bool = True,
                   entrypoints: bool = False) -> MemtunePluginManager:
    """A plugin manager with the core, the built-in techniques (all of them minus ``disable``, or
    none with ``builtins=False``) and ``plugins``, validated as at load."""
    blocked = tuple(disable) + (() if builtins else tuple(builtin_technique_names()))
    return build_plugin_manager(disable=blocked, entrypoints=entrypoints,
                                extra=[_named(p) for p in plugins])


@dataclass
class Run:
    """The report of one run and the host it ran on (for looking at pages, counters, pools)."""

    result: dict[str, Any]
    host: Host

    def vm(self, which: int | str) -> dict[str, Any]:
        """One VM's row of the report, by index or name."""
        if isinstance(which, int):
            return self.result["vms"][which]
        for row in self.result["vms"]:
            if row["name"] == which:
                return row
        raise KeyError(which)

    def total(self, amount: str) -> float:
        """Sum over VMs of a per-VM amount in bytes (``consumed``, ``swapped`` ...)."""
        return float(self.result["host"]["totals"][amount])

    @property
    def plugins(self) -> list[str]:
        return list(self.result["plugins"])


def run_with(*plugins: PluginLike, scenario: Scenario | None = None, disable: Iterable[str] = (),
             builtins: bool = True, entrypoints: bool = False, seed: int | None = None,
             duration: float | None = None, settings: dict[str, Any] | None = None) -> Run:
    """Run ``scenario`` (default :func:`tiny_scenario`) with ``plugins`` added; return report and host.

    ``settings`` overlays the scenario's host settings (e.g. a setting the plugin declares).
    """
    sc = tiny_scenario() if scenario is None else scenario
    pm = plugin_manager(*plugins, disable=tuple(disable) + tuple(sc.disable), builtins=builtins,
                        entrypoints=entrypoints)
    if settings:
        sc = sc.replace(settings={**sc.settings, **settings})
    host = Host(sc, pm, seed=seed)
    result = Engine(host).run(duration)
    return Run(result, host)


@dataclass
class Comparison:
    """The same scenario and seed run with and without a plugin."""

    with_plugin: Run
    without: Run

    def delta(self, amount: str) -> float:
        """``total(amount)`` with the plugin minus without it."""
        return self.with_plugin.total(amount) - self.without.total(amount)


def compare(*plugins: PluginLike, scenario: Scenario | None = None, disable: Iterable[str] = (),
            settings: dict[str, Any] | None = None, **kwargs: Any) -> Comparison:
    """Run ``scenario`` twice with one seed: with ``plugins`` added and without them.

    ``settings`` applies to both runs, except settings only ``plugins`` declare (the run without
    them would reject those names).
    """
    settings = dict(settings or {})
    with_run = run_with(*plugins, scenario=scenario, disable=disable, settings=settings, **kwargs)
    names = {_named(p)[0] for p in plugins}
    own = {n for n, s in with_run.host.registry.settings.items() if s.owner in names}
    without = run_with(
        scenario=scenario,
        disable=disable,
        settings={k: v for k, v in settings.items() if k not in own},
        **kwargs,
    )
    return Comparison(with_run, without)


def collect_knobs(pm: MemtunePluginManager, scenario: Scenario | None = None) -> list[Knob]:
    """Every knob the loaded plugins contribute for ``scenario`` (owner set to the plugin)."""
    sc = tiny_scenario() if scenario is None else scenario
    return registry_of(pm).knobs(sc)


def collect_metrics(host: Host) -> dict[str, Any]:
    """The metric families plugins return from ``memtune_collect_metrics`` now, by name."""
    out: dict[str, Any] = {}
    for families in host.hook.memtune_collect_metrics(host=host):
        for fam in families or []:
            out[fam.name] = fam
    return out


class FixedLatencyState:
    """A minimal page-out technique for tests of the fault path: registers ``state`` (no machine
    page behind it, faults on reads and writes, needs a free page to come back) and serves its
    faults by making the pages resident again at a fixed ``latency``. The test puts pages in the
    state itself (``host.pages.set_state``)."""

    def __init__(self, state: str, latency: float) -> None:
        self.name = state
        self.state = state
        self.latency = latency

    @hookimpl
    def memtune_register_page_states(self, register: Any) -> None:
        register(
            self.state,
            private_frame=False,
            mapped=False,
            read_fault=True,
            write_fault=True,
            fault_allocates=True,
            fault=self.fault,
        )

    def fault(self, host: Host, pages: np.ndarray, write: np.ndarray) -> np.ndarray:
        host.pages.set_state(pages, RESIDENT)
        return np.full(pages.size, self.latency)
