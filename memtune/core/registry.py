"""What the loaded plugins declare, collected once per plugin manager with each plugin as owner.

The registration hooks (``memtune_register_settings``, ``_page_states``, ``_page_out``, ``_knobs``,
``_metrics``) are called here and nowhere else, one plugin at a time, with a ``register`` that
knows which plugin is calling. Host, engine, ``memtune plugins``, the tuner's space, policy
validation and the metrics exporter all read the one :class:`Registry` of their plugin manager
(:func:`registry_of`). Like pluggy's ``HookCaller``, the per-plugin call loop is written once:
:func:`each_plugin`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from memtune.core.knobs import Knob
from memtune.core.pages import FLAGS, PageStates
from memtune.core.settings import Setting, SettingsRegistry
from memtune.errors import PluginError, UserError

if TYPE_CHECKING:
    import pluggy

    from memtune.core.scenario import Scenario


def guard(plugin: str, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped so an exception becomes a :class:`PluginError` naming ``plugin`` and ``hook``.

    For callbacks a plugin hands to the core outside a hook call (page-out tiers, fault handlers)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (PluginError, UserError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name
            raise PluginError(plugin, hook, exc) from exc

    return wrapper


def each_plugin(pm: pluggy.PluginManager, hook: str,
                make_kwargs: Callable[[str], dict[str, Any]]) -> list[tuple[str, Any]]:
    """Call every implementation of ``hook`` once, in plugin load order, with the arguments
    ``make_kwargs(plugin_name)`` makes for it (those it takes); ``(plugin, result)`` pairs.
    Wrappers are skipped; an exception becomes a :class:`PluginError` naming plugin and hook."""
    out = []
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        kwargs = make_kwargs(impl.plugin_name)
        args = {name: kwargs[name] for name in impl.argnames}
        out.append((impl.plugin_name, guard(impl.plugin_name, hook, impl.function)(**args)))
    return out


@dataclass(frozen=True)
class PageOutTier:
    """A place hypervisor-chosen victim pages can go (compression cache, swap file ...)."""

    name: str
    priority: int
    func: Callable[..., np.ndarray]
    owner: str


@dataclass(frozen=True)
class MetricSpec:
    """A metric family a plugin declares: ``memtune_register_metrics``'s ``register`` arguments."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    owner: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "help": self.help, "labels": list(self.labels)}


@dataclass
class Contributions:
    """What one plugin adds through the registration hooks (shown by ``memtune plugins``)."""

    settings: list[Setting] = field(default_factory=list)
    knobs: list[Knob] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)   # name, type, help, labels
    page_states: list[dict[str, Any]] = field(default_factory=list)
    page_out: list[dict[str, Any]] = field(default_factory=list)  # name, priority


class Registry:
    """Settings, page states (flags and fault handler), page-out tiers and metric specs of one
    plugin manager; knobs per scenario (:meth:`knobs`). Built by :func:`registry_of`."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.settings = SettingsRegistry()
        self.states = PageStates()
        self.tiers: list[PageOutTier] = []
        self.metrics: list[MetricSpec] = []
        each_plugin(pm, "memtune_register_settings", self._setting_register)
        each_plugin(pm, "memtune_register_page_states", self._state_register)
        each_plugin(pm, "memtune_register_page_out", self._tier_register)
        each_plugin(pm, "memtune_register_metrics", self._metric_register)
        self.tiers.sort(key=lambda t: (t.priority, t.name))

    # --- the ``register`` each plugin is handed --------------------------------------------------

    def _setting_register(self, owner: str) -> dict[str, Any]:
        def register(setting: Setting) -> None:
            self.settings.register(replace(setting, owner=owner))
        return {"register": register}

    def _state_register(self, owner: str) -> dict[str, Any]:
        def register(name: str, *, fault: Callable[..., np.ndarray] | None = None, **flags: bool) -> int:
            handler = None if fault is None else guard(owner, f"fault handler of page state {name!r}", fault)
            return self.states.add(name, owner=owner, fault=handler, **flags)
        return {"register": register}

    def _tier_register(self, owner: str) -> dict[str, Any]:
        def register(name: str, priority: int, func: Callable[..., np.ndarray]) -> None:
            self.tiers.append(PageOutTier(name, int(priority), guard(owner, f"page-out tier {name!r}", func),
                                          owner))
        return {"register": register}

    def _metric_register(self, owner: str) -> dict[str, Any]:
        def register(name: str, type: str, help: str = "", labels: Iterable[str] = ()) -> None:  # noqa: A002
            self.metrics.append(MetricSpec(name, type, help, tuple(labels), owner))
        return {"register": register}

    # --- reading it ----------------------------------------------------------------------------

    def knobs(self, scenario: Scenario) -> list[Knob]:
        """Every knob the plugins register for ``scenario``, owner set to the plugin."""
        knobs: list[Knob] = []

        def make(owner: str) -> dict[str, Any]:
            def register(knob: Knob) -> None:
                if not isinstance(knob, Knob):
                    raise UserError(f"plugin {owner!r} registered {knob!r}, not a memtune Knob")
                knobs.append(replace(knob, owner=owner))
            return {"register": register, "scenario": scenario}

        each_plugin(self.pm, "memtune_register_knobs", make)
        return knobs

    def contributions(self, scenario: Scenario | None = None) -> dict[str, Contributions]:
        """Per plugin, in load order: its settings, knobs (for ``scenario``, default the built-in
        ``small``), metric families, page states and page-out tiers."""
        names = list(getattr(self.pm, "info", {})) or [n for n, _ in self.pm.list_name_plugin()]
        out = {name: Contributions() for name in names}

        def slot(owner: str) -> Contributions:
            return out.setdefault(owner, Contributions())

        for s in self.settings:
            slot(s.owner).settings.append(s)
        for info in self.states:
            if info.code > 1:                      # free and resident are the core's own
                slot(info.owner).page_states.append({"name": info.name, **_flags(info)})
        for t in self.tiers:
            slot(t.owner).page_out.append({"name": t.name, "priority": t.priority})
        for m in self.metrics:
            slot(m.owner).metrics.append(m.as_dict())
        if self.pm.hook.memtune_register_knobs.get_hookimpls():
            if scenario is None:
                from memtune.core.scenario import load_scenario

                scenario = load_scenario("small")
            for k in self.knobs(scenario):
                slot(k.owner).knobs.append(k)
        return out


def _flags(info: Any) -> dict[str, bool]:
    return {f: getattr(info, f) for f in FLAGS}


def registry_of(pm: pluggy.PluginManager) -> Registry:
    """The registry of ``pm``, collected on first use and again after plugins were (un)registered."""
    reg = getattr(pm, "_memtune_registry", None)
    if reg is None:
        reg = Registry(pm)
        pm._memtune_registry = reg  # type: ignore[attr-defined]
    return reg


def settings_registry(pm: pluggy.PluginManager) -> SettingsRegistry:
    """Every setting the loaded plugins declare."""
    return registry_of(pm).settings
