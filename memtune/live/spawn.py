"""Starting a live run's workers: one ``python -m memtune.live.worker CONFIG.json`` per VM.

Each worker's configuration names its control block, its content file (the model's page keys,
compressibility and initially resident pages), its guest swap file, its workload, its cgroups and
the model's working-set sampling settings; its output goes to ``vmN.log`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from memtune.core.scenario import Scenario
from memtune.live.cgroup import Group

PAGE = 4096
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def workload_dict(wl: Any) -> dict[str, Any]:
    """A workload spec as JSON data (``extra`` is the model's, not the worker's)."""
    d = dataclasses.asdict(wl)
    d.pop("extra", None)
    return d


def worker_config(sc: Scenario, v: int, group: Group, paths: dict[str, Path], run: dict[str, Any]) -> dict:
    """The configuration of VM ``v``'s worker. ``paths``: ctl, content, guest_swap, stats (and
    latency: the worker's :class:`~memtune.live.control_block.LatencyBlock`, when metrics are exported);
    ``run``: mergeable, seed, timed_per_s, settings (the model's, after the policy)."""
    vm, s = sc.vms[v], run["settings"]
    return {
        "ctl": str(paths["ctl"]),
        "content": str(paths["content"]),
        "pages": vm.memory // PAGE,
        "mergeable": run["mergeable"],
        "locked": vm.reservation // PAGE,     # the reservation, enforced with mlock2 (guest.py)
        "guest_swap": str(paths["guest_swap"]),
        "workload": workload_dict(vm.workload),
        "start": vm.start,
        "seed": run["seed"] * 1000 + v,
        "duration": sc.duration,
        "warmup": sc.warmup,
        "timed_per_s": run["timed_per_s"],
        "stats": str(paths["stats"]),
        "latency": str(paths["latency"]) if "latency" in paths else None,
        "vm_index": v,
        "cgroups": [str(group.v1 / "cgroup.procs")] + ([str(group.v2 / "cgroup.procs")] if group.v2 else []),
        "sampling": {
            "size": int(s["Mem.SampleSize"]),
            "period": float(s["Mem.SamplePeriod"]),
            "fast": s["memtune.sample_alpha_fast"],
            "slow": s["memtune.sample_alpha_slow"],
        },
    }


def start_worker(cfg: dict[str, Any], run_dir: Path, v: int) -> subprocess.Popen:
    """Write VM ``v``'s configuration and start its worker (output to ``vmN.log``)."""
    path = run_dir / f"vm{v}.json"
    path.write_text(json.dumps(cfg))
    with open(run_dir / f"vm{v}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "memtune.live.worker", str(path)],
            env={**os.environ, **ONE_THREAD},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
