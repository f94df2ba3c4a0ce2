"""The host-driver interface and its two implementations.

A driver runs a scenario (with its policy already applied, see ``memtune.policies.apply``) and
returns a result with the same figures either way (:mod:`memtune.live.figures`):
:class:`SimDriver` runs the simulator; :class:`LinuxDriver` (:mod:`memtune.live.linux`) runs one
worker process per VM on this host under the kernel's own mechanisms.
"""

from __future__ import annotations

from typing import Any, Protocol

from memtune.core.scenario import Scenario
from memtune.core.simulation import simulate
from memtune.live.figures import sim_figures


class HostDriver(Protocol):
    name: str

    def run(self, scenario: Scenario, *, seed: int | None = None) -> dict[str, Any]:
        """Run ``scenario``; returns ``{"driver", "figures", "vms", "timeline", ...}``."""
        ...


class SimDriver:
    """The model: today's engine, unchanged."""

    name = "sim"

    def __init__(self, disable: tuple[str, ...] = ()) -> None:
        self.disable = disable

    def run(self, scenario: Scenario, *, seed: int | None = None) -> dict[str, Any]:
        result = simulate(scenario, seed=seed, disable=self.disable)
        return {"driver": self.name, "scenario": scenario.name, "seed": result["seed"],
                "figures": sim_figures(result), "timeline": result["timeline"],
                "vms": [{k: v for k, v in row.items() if k != "counters"} for row in result["vms"]]}
