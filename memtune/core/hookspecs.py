"""Hook specifications: everything a memtune plugin can do.

The core calls these hooks with keyword arguments only, so a spec may grow new arguments without
breaking plugins that do not take them. Built-in techniques (balloon, tps, compression, swap,
encryption, audit) implement exactly these hooks and nothing else.

Order within one simulated tick (``Engine.step``):

1. workloads advance and touches are drawn; touches of pages in a faulting state go to
   ``memtune_page_fault`` (then ``memtune_fault_latency``); ``memtune_access_overhead`` may add
   a cost to every touch;
2. ``memtune_tick`` (background work such as page-sharing scans);
3. working-set sampling and share-based allocation targets; the memory state is updated
   (``memtune_event`` with kind ``state-change``);
4. ``memtune_reclaim`` with what each VM holds above its target.

Registration hooks (``memtune_register_*``) are called once per plugin manager, plugin by plugin,
by :mod:`memtune.core.registry` (knobs once per scenario the tuner builds a space for). Plugin
authors import what they need from :mod:`memtune.plugin`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import numpy as np

    from memtune.core.host import Host
    from memtune.core.knobs import Knob
    from memtune.core.scenario import Scenario
    from memtune.core.settings import Setting

hookspec = pluggy.HookspecMarker("memtune")
hookimpl = pluggy.HookimplMarker("memtune")


# --- what the registration hooks are handed -----------------------------------------------------

class RegisterSetting(Protocol):
    """``register(setting)`` in :func:`memtune_register_settings`."""

    def __call__(self, setting: Setting, /) -> None: ...


class FaultHandler(Protocol):
    """``fault(host=, pages=, write=) -> seconds per page``: a page state's fault handler."""

    def __call__(self, *, host: Host, pages: np.ndarray, write: np.ndarray) -> np.ndarray: ...


class RegisterPageState(Protocol):
    """``register(name, **flags, fault=handler) -> code`` in :func:`memtune_register_page_states`."""

    def __call__(
        self,
        name: str,
        /,
        *,
        private_frame: bool = ...,
        mapped: bool = ...,
        read_fault: bool = ...,
        write_fault: bool = ...,
        fault_allocates: bool = ...,
        fault: FaultHandler | None = ...,
    ) -> int: ...


class RegisterPageOut(Protocol):
    """``register(name, priority, func)`` in :func:`memtune_register_page_out`."""

    def __call__(self, name: str, priority: int, func: Callable[..., np.ndarray], /) -> None: ...


class RegisterKnob(Protocol):
    """``register(knob)`` in :func:`memtune_register_knobs`."""

    def __call__(self, knob: Knob, /) -> None: ...


class RegisterMetric(Protocol):
    """``register(name, type, help, labels)`` in :func:`memtune_register_metrics`."""

    def __call__(self, name: str, type: str, help: str, labels: Sequence[str] = ..., /) -> None: ...


# --- registration ------------------------------------------------------------------------------


@hookspec
def memtune_register_settings(register: RegisterSetting) -> None:
    """Declare host settings (``register(Setting(...))``).

    Called once per plugin manager (the registry). Each setting names the real option it mirrors
    (``Mem.ShareScanTime``, ``Mem.CtlMaxPercent`` ...) or a ``latency.*`` cost, its default and
    the source of that default. Scenarios and policies may only set declared settings.
    Returns nothing.
    """


@hookspec
def memtune_register_page_states(register: RegisterPageState) -> None:
    """Declare page states this plugin owns (``code = register(name, **flags, fault=handler)``).

    ``register`` takes the flags of :class:`memtune.core.pages.PageStateInfo` (``private_frame``,
    ``mapped``, ``read_fault``, ``write_fault``, ``fault_allocates``) and the state's fault
    handler, ``fault(host=, pages=, write=)``: it brings the touched ``pages`` (unique, all in this
    state) back to a mapped state and returns the extra latency per page in seconds. It returns the
    state code. Called once per plugin manager (the registry), not per host: look codes up with
    ``host.states.code(name)`` in ``memtune_configure``, not in globals. Returns nothing.
    """


@hookspec
def memtune_register_page_out(register: RegisterPageOut) -> None:
    """Declare a page-out tier: ``register(name, priority, func)``.

    ``func(host=..., pages=...)`` takes hypervisor-chosen victim pages (resident, private) and
    returns a boolean mask of the pages it took. ``Host.page_out`` offers victims to tiers in
    rising priority (compression 10, swap 90), each seeing what the earlier ones left. Called once
    per plugin manager (the registry). Returns nothing.
    """


@hookspec
def memtune_register_knobs(register: RegisterKnob, scenario: Scenario) -> None:
    """Contribute dimensions to the tuner's search space: ``register(Knob(...))``.

    Called when the tuner builds its space for ``scenario``. A knob names a host setting or a
    per-VM field and its range; the tuner validates names against the settings registry.
    Returns nothing.
    """


@hookspec
def memtune_register_metrics(register: RegisterMetric) -> None:
    """Declare metric families this plugin exports: ``register(name, type, help, labels)``.

    Collected into the registry (``registry_of(pm).metrics``, owner set to the plugin) and shown
    by ``memtune plugins``; values come from ``memtune_collect_metrics``.
    Returns nothing.
    """


# --- lifecycle -----------------------------------------------------------------------------------


@hookspec
def memtune_configure(host: Host) -> None:
    """A host was built and is about to run its first tick.

    Allocate per-host plugin state here and keep it in ``host.plugin_data[<name>]``; plugins must
    not keep state in module globals, so several hosts can run in one process. Called once, when
    the host's engine is created, after every registration hook. Returns nothing.
    """


@hookspec
def memtune_tick(host: Host, now: float, dt: float) -> None:
    """Background work once per tick after touches were served (e.g. a page-sharing scan).

    ``now`` is the simulated time at the end of the tick, ``dt`` its length in seconds. One round
    of touch draws may stand for several ticks (``memtune.touch_interval``); later ticks of such a
    span serve no new touches. Returns nothing.
    """


@hookspec
def memtune_reclaim(host: Host, state: int, need: np.ndarray) -> None:
    """Reclaim memory from VMs above their allocation target.

    ``state`` is the host memory state (:class:`memtune.core.memstate.MemState`), ``need[v]`` the
    pages VM ``v`` holds above its target. Subtract what you reclaim from ``need`` in place; later
    implementations see the rest. Order: ``tryfirst`` (balloon), default (compression), ``trylast``
    (hypervisor swap). Called every tick after the memory state was updated. Returns nothing.
    """


@hookspec(firstresult=True)
def memtune_page_fault(host: Host, state: int, pages: np.ndarray, write: np.ndarray) -> np.ndarray | None:
    """Serve touches of pages in a faulting ``state`` registered without a ``fault`` handler.

    Prefer ``register(name, ..., fault=handler)`` in :func:`memtune_register_page_states`: the core
    then calls the owner's handler directly. This hook remains for plugins written before handlers.
    ``pages`` are unique page indices, ``write`` says which touches write. Bring the pages back to a
    mapped state and return the extra latency per page in seconds; return ``None`` for states you
    do not own. The first non-None result wins.
    """


@hookspec
def memtune_fault_latency(
    host: Host, state: int, pages: np.ndarray, latency: np.ndarray
) -> np.ndarray | None:
    """Extra seconds for faults another plugin served (e.g. decrypting a page swapped in).

    Called after ``memtune_page_fault`` for the same ``pages`` (which were in ``state``);
    ``latency`` is what the owner charged. Return an array to add, or None; all results are added.
    """


@hookspec
def memtune_access_overhead(host: Host) -> np.ndarray | None:
    """Extra seconds every touch of each VM pays (e.g. memory encryption), one value per VM.

    Called once per round of touch draws (every tick, or once for a span of ticks). Return an array
    of ``host.nvm`` values to add, or None; all results are added.
    """


@hookspec
def memtune_event(host: Host, kind: str, vm: int | None, data: dict) -> None:
    """Something worth recording happened: ``state-change``, ``policy``, ``admission-refused``,
    ``reclaim``, ``share``, ``cow-break``, ``anomaly`` ...

    ``vm`` is a VM index or None for host-wide events. Plugins may emit their own kinds with
    ``host.emit``. Keep implementations cheap: the core calls this at most a few times per tick.
    Returns nothing.
    """


@hookspec
def memtune_vm_columns(host: Host) -> dict[str, np.ndarray] | None:
    """Per-VM amounts in bytes for reports and metrics, e.g. ``{"shared_saved": array}``.

    Called when a snapshot is taken (reporting interval and end of run), not every tick.
    """


@hookspec
def memtune_collect_metrics(host: Host) -> list[Any] | None:
    """Prometheus metric families (prometheus_client.core) describing this plugin's state now.

    Called on every scrape and textfile write, with the simulation paused. Return a list of fresh
    families whose names start with ``memtune_``, or None. Build per-VM families from arrays with
    ``memtune.plugin`` (``vm_gauge``, ``vm_counter``, ``host_gauge``): no ``add_metric``
    per VM, and the scrape formats each array in one go.
    """


@hookspec
def memtune_finish(host: Host, result: dict) -> None:
    """The run ended; ``result`` is the report being returned. Flush and close files here.

    Called once at the end of ``Engine.run``; you may add keys to ``result``. Returns nothing.
    """
