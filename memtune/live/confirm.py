"""``memtune optimize --confirm live``: the tuned policy and esxi-default, re-run on this host.

Both policies are applied to the tuned scenario, which is then scaled (``memtune.live.compare``)
and run on the model and on this host for each seed. The improvement is the tuned policy's figure
over esxi-default's (stall and mean extra latency), on each side; ``confirm-live.json`` keeps
every figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memtune.core.scenario import Scenario
from memtune.live.compare import ValidateConfig, compare_figures, scaled
from memtune.live.driver import SimDriver
from memtune.live.linux import LinuxDriver, LiveOptions
from memtune.policies import apply_policy, load_policy

BASELINE = "esxi-default"
FILE = "confirm-live.json"


def _ratio(rows: dict[str, Any], fig: str, side: str) -> float | None:
    base = rows[BASELINE][fig][side]["mean"]
    return rows["tuned"][fig][side]["mean"] / base if base else None


def confirm_live(sc: Scenario, out: Path, policy_file: str, *, seeds: tuple[int, ...] = (1, 2),
                 duration: float = 60.0, disable: tuple[str, ...] = ()) -> dict[str, Any]:
    cfg = ValidateConfig(duration=duration, seeds=seeds, disable=disable)
    live = LinuxDriver(LiveOptions(), disable=disable)
    rows: dict[str, Any] = {}
    oom: dict[str, Any] = {}
    for name, ref in ((BASELINE, BASELINE), ("tuned", str(out / policy_file))):
        s = scaled(apply_policy(load_policy(ref), sc), cfg)
        model = [SimDriver(disable).run(s, seed=x)["figures"] for x in seeds]
        real = [live.run(s, seed=x)["figures"] for x in seeds]
        rows[name] = compare_figures(model, real)
        oom[name] = [r["oom_killed"] for r in real]
    result = {"scaled": s.description, "seeds": list(seeds), "figures": rows, "oom_killed": oom,
              "improvement": {fig: {side: _ratio(rows, fig, side) for side in ("model", "real")}
                              for fig in ("stall", "mean_latency", "p99_latency")}}
    tmp = out / (FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out / FILE)
    return result


def summary(result: dict[str, Any]) -> str:
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [f"confirmed on this host ({result['scaled']}; seeds {result['seeds']}): tuned / {BASELINE}"]
    for fig, r in result["improvement"].items():
        lines.append(f"  {fig:<13} model {f(r['model'])}  real {f(r['real'])}")
    killed = {k: v for k, v in result["oom_killed"].items() if any(v)}
    if killed:
        lines.append(f"  OOM-killed VMs on the real host: {killed}")
    return "\n".join(lines)
