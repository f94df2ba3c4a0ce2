"""Result hashes of the built-in scenarios: one line each, ``name sha256``.

    python -m benchmarks.hashes [--only small,vdi] [--seed N]

The hash is sha256 over the canonical JSON (sorted keys, no spaces) of ``simulate``'s result at the
scenario's own seed, with the built-in plugins only (installed packages do not change it). A
refactoring that keeps the model keeps every hash.
"""

from __future__ import annotations

import argparse
import hashlib
import json

from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import builtin_names, load_scenario
from memtune.core.simulation import simulate


def result_hash(name: str, seed: int | None = None) -> str:
    """sha256 of the canonical JSON of ``simulate(load_scenario(name), seed=seed)`` (built-ins only)."""
    scenario = load_scenario(name)
    pm = build_plugin_manager(disable=scenario.disable, entrypoints=False)
    result = simulate(scenario, seed=seed, pm=pm)
    text = json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated scenario names (default: all built-ins)")
    ap.add_argument("--seed", type=int, default=None, help="override every scenario's seed")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or builtin_names()
    for name in names:
        print(name, result_hash(name, args.seed), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
