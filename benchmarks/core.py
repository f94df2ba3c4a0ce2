"""Simulation speed: VM-ticks and touches per second, and how cost scales.

Targets (issue 2): `small` (30 simulated minutes) under 1 s, `large` (1 simulated hour) under 30 s on
one core; doubling the VM count roughly doubles the time (cost follows activity); quadrupling host
and VM memory at the same activity costs under 1.3x. ``fixed_work`` is the part of `small`'s time
that does not depend on how many pages move: the same run with 4 MiB pages, per tick.
"""

from __future__ import annotations

import dataclasses
import time

from memtune.core.engine import Engine
from memtune.core.scenario import Scenario, load_scenario
from memtune.core.simulation import build_host


def timed_runs(scenarios: list[Scenario], repeat: int = 1) -> list[dict]:
    """Build (not timed) and run (timed) each scenario ``repeat`` times, taking turns, so a slow
    spell of the machine hits every scenario alike (this one's speed varies by half within
    minutes); speed figures of each scenario's fastest run, the least disturbed (every run of a
    scenario simulates the same thing)."""
    wall = [float("inf")] * len(scenarios)
    last: list = [None] * len(scenarios)
    for _ in range(repeat):
        for k, sc in enumerate(scenarios):
            host = build_host(sc)
            eng = Engine(host)
            t0 = time.perf_counter()
            result = eng.run()
            wall[k] = min(wall[k], time.perf_counter() - t0)
            last[k] = (host, result)
    out = []
    for sc, w, (host, result) in zip(scenarios, wall, last, strict=True):
        out.append({
            "scenario": sc.name,
            "vms": host.nvm,
            "pages": int(host.pages.total),
            "page_bytes": host.page_bytes,
            "simulated_s": sc.duration,
            "repeat": repeat,
            "wall_s": round(w, 3),
            "vm_ticks_per_s": round(host.ticks * host.nvm / w),
            "simulated_touches_per_s": round(float(host.book.touches.sum()) / w),
            "host_stall": round(result["host"]["stall"], 4),
        })
    return out


def timed_run(sc: Scenario, repeat: int = 1) -> dict:
    """:func:`timed_runs` for one scenario."""
    return timed_runs([sc], repeat)[0]


def scaled(sc: Scenario, *, vm_factor: int = 1, mem_factor: int = 1, page_scale: int | None = None,
           duration: float | None = None) -> Scenario:
    """``sc`` with the VM list repeated ``vm_factor`` times and all memory multiplied."""
    vms = []
    for k in range(vm_factor):
        for v in sc.vms:
            vms.append(dataclasses.replace(
                v, name=f"{v.name}-x{k}", memory=v.memory * mem_factor,
                reservation=v.reservation * mem_factor,
                limit=None if v.limit is None else v.limit * mem_factor))
    host = dataclasses.replace(sc.host, memory=sc.host.memory * vm_factor * mem_factor,
                               page_scale=page_scale or sc.host.page_scale)
    return sc.replace(vms=tuple(vms), host=host, duration=duration or sc.duration,
                      name=f"{sc.name}x{vm_factor}vm-x{mem_factor}mem")


def run() -> dict:
    small = load_scenario("small")
    large = load_scenario("large")
    # the tick's fixed work (numpy calls, hooks): `small` with 4 MiB pages, where the pages it
    # moves cost next to nothing; times the ticks of a run, it is the floor under `small`'s time
    coarse = small.replace(host=dataclasses.replace(small.host, page_scale=1024))
    small_run, fixed = timed_runs([small, coarse], repeat=5)
    out: dict = {"small": small_run, "large": timed_run(large)}
    ticks = round(small.duration / small.tick)
    out["fixed_work"] = {
        "per_tick_ms": round(fixed["wall_s"] / ticks * 1e3, 2),
        "ticks": ticks,
        "run_s": fixed["wall_s"],
        "share_of_small": round(fixed["wall_s"] / out["small"]["wall_s"], 2),
    }
    base = small.replace(duration=600.0)
    t1, t2, t4, m4 = timed_runs(
        [
            scaled(base, page_scale=16),
            scaled(base, vm_factor=2, page_scale=16),
            scaled(base, vm_factor=4, page_scale=16),
            scaled(base, mem_factor=4, page_scale=16),
        ],
        repeat=3,
    )
    out["scaling"] = {
        "base_wall_s": t1["wall_s"],
        "double_vms_ratio": round(t2["wall_s"] / t1["wall_s"], 3),
        "quadruple_vms_ratio": round(t4["wall_s"] / t1["wall_s"], 3),
        "quadruple_memory_ratio": round(m4["wall_s"] / t1["wall_s"], 3),
        "quadruple_memory_pages": m4["pages"],
        "base_pages": t1["pages"],
    }
    out["targets"] = {
        "small_under_1s": out["small"]["wall_s"] < 1.0,
        "large_under_30s": out["large"]["wall_s"] < 30.0,
        "quadruple_memory_under_1.3x": out["scaling"]["quadruple_memory_ratio"] < 1.3,
    }
    return out


def main() -> None:
    import json

    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
