"""Everything a memtune plugin imports, in one module (as ``llm`` and ``datasette`` expose theirs)::

    from memtune.plugin import Knob, Setting, hookimpl

    @hookimpl
    def memtune_register_settings(register):
        register(Setting("myplugin.rate", "bytes", "8 MiB", "Pages moved per second.", "vendor doc"))

The built-in plugins (balloon, tps, compression, swap, encryption, audit) import only this module;
``tests/test_plugin_api.py`` fails if a plugin reaches into ``memtune.core``. The hooks themselves
are documented in :mod:`memtune.core.hookspecs` and docs/plugins.md.

- declaring: :data:`hookimpl`, :class:`Setting`, :class:`Knob`; :func:`settings_hook`,
  :func:`metrics_hook`, :func:`knobs_hook` and :func:`page_out_hook` make the registration hooks of
  a plugin that lists its settings / metrics / knobs or has one page-out tier;
- the host a hook is handed: :class:`Host` (for annotations), :class:`MemState` (``host.state``);
- page states: :data:`FREE`, :data:`RESIDENT`, :data:`MAX_STATES`, :func:`first_of_each` (the
  first ``want[v]`` entries of each VM in a list grouped by VM); lookup tables over state codes come
  from ``host.states.table(code, ...)`` and ``host.states.flag_table(flag)``;
- page contents: :func:`unique_content`, :func:`template_content`, :func:`duplicate_content`,
  :func:`is_unique`, :data:`CONTENT_BITS`;
- metrics: :func:`vm_gauge`, :func:`vm_counter` (per-VM families from arrays), :func:`vm_family`
  (several columns), :func:`host_gauge`, :func:`host_counter`;
- units and errors: :data:`KiB`, :data:`MiB`, :data:`GiB`, :class:`ConfigError`, :class:`UserError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from memtune.core.contents import CONTENT_BITS, duplicate_content, is_unique, template_content, unique_content
from memtune.core.hookspecs import hookimpl
from memtune.core.host import Host
from memtune.core.knobs import Knob
from memtune.core.memstate import MemState
from memtune.core.pages import FREE, MAX_STATES, RESIDENT, first_of_each
from memtune.core.settings import Setting
from memtune.errors import ConfigError, UserError
from memtune.units import GiB, KiB, MiB

__all__ = [
    "CONTENT_BITS",
    "FREE",
    "MAX_STATES",
    "RESIDENT",
    "ConfigError",
    "GiB",
    "Host",
    "KiB",
    "Knob",
    "MemState",
    "MiB",
    "Setting",
    "UserError",
    "duplicate_content",
    "first_of_each",
    "hookimpl",
    "host_counter",
    "host_gauge",
    "is_unique",
    "knobs_hook",
    "metrics_hook",
    "page_out_hook",
    "settings_hook",
    "template_content",
    "unique_content",
    "vm_counter",
    "vm_family",
    "vm_gauge",
]


def settings_hook(settings: Iterable[Setting]) -> Callable[..., None]:
    """A ``memtune_register_settings`` implementation declaring ``settings``; in a plugin module::

    memtune_register_settings = settings_hook(SETTINGS)
    """
    declared = tuple(settings)

    @hookimpl
    def memtune_register_settings(register: Callable[[Setting], None]) -> None:
        for setting in declared:
            register(setting)

    return memtune_register_settings


def metrics_hook(metrics: Iterable[tuple[str, str, str, Sequence[str]]]) -> Callable[..., None]:
    """A ``memtune_register_metrics`` implementation declaring ``(name, type, help, labels)``
    families; in a plugin module: ``memtune_register_metrics = metrics_hook(METRICS)``."""
    declared = tuple(metrics)

    @hookimpl
    def memtune_register_metrics(register: Callable[..., None]) -> None:
        for name, kind, help_, labels in declared:
            register(name, kind, help_, labels)

    return memtune_register_metrics


def knobs_hook(knobs: Iterable[Knob]) -> Callable[..., None]:
    """A ``memtune_register_knobs`` implementation contributing the same ``knobs`` to every
    scenario's tuner space; in a plugin module: ``memtune_register_knobs = knobs_hook(KNOBS)``."""
    declared = tuple(knobs)

    @hookimpl
    def memtune_register_knobs(register: Callable[[Knob], None], scenario: Any) -> None:
        for knob in declared:
            register(knob)

    return memtune_register_knobs


def page_out_hook(name: str, priority: int, take: Callable[..., Any]) -> Callable[..., None]:
    """A ``memtune_register_page_out`` implementation declaring one tier ``take(host, pages)`` at
    ``priority`` (``Host.page_out`` offers victims in rising priority); in a plugin module:
    ``memtune_register_page_out = page_out_hook(NAME, PRIORITY, take_pages)``."""

    @hookimpl
    def memtune_register_page_out(register: Callable[..., None]) -> None:
        register(name, priority, take)

    return memtune_register_page_out


# The metric helpers import prometheus_client on first use, so a run that exports no metrics
# never loads it.


def vm_gauge(
    name: str,
    help: str,
    vm_names: list[str],
    values: Any,  # noqa: A002
    labels: dict[str, str] | None = None,
) -> Any:
    """A per-VM gauge family from one array (:func:`memtune.metrics.families.vm_gauge`)."""
    from memtune.metrics.families import vm_gauge as make

    return make(name, help, vm_names, values, labels)


def vm_counter(
    name: str,
    help: str,
    vm_names: list[str],
    values: Any,  # noqa: A002
    labels: dict[str, str] | None = None,
) -> Any:
    """A per-VM counter family from one array (:func:`memtune.metrics.families.vm_counter`)."""
    from memtune.metrics.families import vm_counter as make

    return make(name, help, vm_names, values, labels)


def vm_family(name: str, help: str, type: str, vm_names: list[str]) -> Any:  # noqa: A002
    """A per-VM family to fill with several columns (``.add_column(values, labels)``), e.g. one
    per direction (:class:`memtune.metrics.families.VMFamily`)."""
    from memtune.metrics.families import VMFamily

    return VMFamily(name, help, type, vm_names)


def host_counter(name: str, help: str, value: float) -> Any:  # noqa: A002
    """A host-wide counter family with one sample (prometheus_client ``CounterMetricFamily``;
    ``name`` without ``_total``)."""
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(name, help, value=value)


def host_gauge(name: str, help: str, value: float) -> Any:  # noqa: A002
    """A host-wide gauge family with one sample (prometheus_client ``GaugeMetricFamily``)."""
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, help, value=value)
