"""Shared test fixtures: tiny scenarios with per-VM tables, hosts ready to step, page bookkeeping.

Keep additions small and reusable (a builder, a check); test-specific set-up stays in its test file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

from memtune.core.engine import Engine
from memtune.core.host import Host
from memtune.core.pages import FREE, RESIDENT
from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import Scenario, load_scenario, scenario_from_dict
from memtune.core.simulation import build_host
from memtune.testing import TINY_WORKLOAD, plugin_manager
from memtune.tuner.executors import SerialExecutor

# CI runs one fixed sample of every property test (the same inputs each run, so a red CI can be
# reproduced); a developer's run draws new inputs each time.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

TINY_VM = {"memory": "1 GiB", "workload": "w", "image": "tiny-linux"}


def build_scenario(vms: Sequence[dict[str, Any]], *, name: str = "test", memory: str = "3 GiB",
                   duration: str = "2m", tick: str = "2s", seed: int = 1, page_scale: int | None = 16,
                   workload: dict[str, Any] | None = None, tiny_workload: bool = True,
                   vm_defaults: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                   report_interval: str | None = "10s", allow_overcommit: bool | None = None,
                   source: str = "<test scenario>", **top: Any) -> Scenario:
    """The tests' one scenario builder: a validated scenario whose ``vms`` are [[vm]] tables.

    Each table is laid over ``vm_defaults`` (default :data:`TINY_VM`: 1 GiB, the shared workload
    ``w``, image ``tiny-linux``; ``{}`` for tables that say everything). The shared workload ``w`` is
    the tiny web-like workload of :mod:`memtune.testing` overlaid with ``workload``
    (``tiny_workload=False``: ``workload`` alone; ``workload=None, tiny_workload=False``: none).
    ``page_scale`` / ``report_interval`` / ``allow_overcommit`` None leave the scenario's default; ``top``
    adds top-level
    keys (``warmup``, ``content_group`` ...).
    """
    defaults = TINY_VM if vm_defaults is None else vm_defaults
    data: dict[str, Any] = {
        "name": name,
        "duration": duration,
        "tick": tick,
        "seed": seed,
        "host": {"memory": memory},
        "settings": dict(settings or {}),
        "vm": [{**defaults, **v} for v in vms],
    }
    if page_scale is not None:
        data["host"]["page_scale"] = page_scale
    if allow_overcommit is not None:
        data["host"]["allow_overcommit"] = allow_overcommit
    if report_interval is not None:
        data["report_interval"] = report_interval
    if tiny_workload or workload is not None:
        data["workloads"] = {"w": {**(TINY_WORKLOAD if tiny_workload else {}), **(workload or {})}}
    data.update(top)
    return scenario_from_dict(data, source)


def engine_scenario(
    host: str = "8 GiB",
    vms: Sequence[dict[str, Any]] | None = None,
    duration: str = "5m",
    tick: str = "5s",
    settings: dict[str, Any] | None = None,
    allow_overcommit: bool = False,
    **top: Any,
) -> Scenario:
    """The engine tests' scenario: two 2 GiB VMs (60 % allocated, 20 % hot) on an 8 GiB host, 5 minutes."""
    vms = vms or [{"name": "vm", "count": 2, "memory": "2 GiB", "workload": {"allocated": 0.6, "wss": 0.2}}]
    return build_scenario(
        vms,
        name="t",
        memory=host,
        duration=duration,
        tick=tick,
        seed=3,
        page_scale=64,
        settings=settings,
        tiny_workload=False,
        vm_defaults={},
        report_interval=None,
        allow_overcommit=allow_overcommit,
        source="<test>",
        **top,
    )


SHARING_ONLY = ("balloon", "compression", "swap", "audit")  # plugins the sharing tests leave out


def make_host(
    sc: Scenario, disable: Sequence[str] = SHARING_ONLY, extra: Sequence[tuple[str, object]] = ()
) -> tuple[Host, Engine]:
    """A host (built-in plugins minus ``disable``, no entry points, plus ``extra``) and its engine."""
    pm = build_plugin_manager(disable=disable, entrypoints=False, extra=extra)
    host = build_host(sc, pm=pm)
    return host, Engine(host)


def map_all(host: Host) -> None:
    """Every guest page backed by a private machine page (the guest touched all its memory)."""
    host.pages.set_state(np.flatnonzero(host.pages.state == FREE), RESIDENT)


def run_for(engine: Engine, seconds: float, tick: float = 10.0) -> None:
    """Step ``engine`` for ``seconds`` in ticks of ``tick``."""
    for _ in range(int(round(seconds / tick))):
        engine.step(tick)


@pytest.fixture
def scenario_of() -> Callable[..., Scenario]:
    """``scenario_of([{"name": "a"}, {"name": "b", "balloon_driver": False}], memory="2 GiB")``."""
    return build_scenario


@pytest.fixture
def host_of() -> Callable[..., tuple[Host, Engine]]:
    """``host, engine = host_of(scenario, disable=["tps"])``: built, plugins configured, not run."""

    def make(
        scenario: Scenario, *, disable: Sequence[str] = (), seed: int | None = None
    ) -> tuple[Host, Engine]:
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


# --- the tuner tests' tiny scenario ----------------------------------------------------------------

# 3 GiB host, web-01/02 and db-01/02 of 1 GiB each: overcommitted once guests touch their memory;
# two minutes simulated with 64 KiB simulated pages keep one run well under a second.
TINY_TOML = """
name = "tiny-tuner"
duration = "2m"
tick = "2s"
warmup = "30s"
seed = 7

[host]
memory = "3 GiB"
page_scale = 16

[workloads.web]
kind = "constant"
allocated = 0.8
wss = 0.3
hot_share = 0.9
touch_rate = 20000
write_fraction = 0.2

[workloads.db]
kind = "constant"
allocated = 0.9
wss = 0.5
touch_rate = 40000
write_fraction = 0.3

[[vm]]
name = "web"
count = 2
memory = "1 GiB"
workload = "web"
image = "linux"

[[vm]]
name = "db"
count = 2
memory = "1 GiB"
workload = "db"
image = "linux"
shares = "high"
"""


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tuner tests' tiny two-role scenario as a TOML file."""
    path = tmp_path_factory.mktemp("sc") / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture(scope="session")
def tiny(tiny_path: Path) -> Scenario:
    """The tuner tests' tiny two-role scenario, loaded."""
    return load_scenario(tiny_path)


class RecordingExecutor(SerialExecutor):
    """Runs in this process and remembers which evaluation indices were simulated."""

    def __init__(self) -> None:
        super().__init__()
        self.simulated: list[int | str] = []

    def submit(self, task):
        self.simulated.append(task.index)
        super().submit(task)


@pytest.fixture
def recording_executor() -> RecordingExecutor:
    """A serial executor that remembers which evaluation indices it simulated."""
    return RecordingExecutor()


class Killed(Exception):
    """Raised by ``DiesAfter`` in place of the kill of a tuner run (tests of resume)."""


class DiesAfter(SerialExecutor):
    """Serial executor that raises ``Killed`` before handing over evaluation result ``n``
    (0-based; the seed probe's results do not count), as if the run were killed mid-batch: what
    finished is journaled, what did not is lost."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def next_result(self):
        if self.n == 0:
            raise Killed
        res = super().next_result()
        if not str(res["index"]).startswith("probe-"):
            self.n -= 1
        return res
