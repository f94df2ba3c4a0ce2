"""All benchmarks in one command: prints the figures and writes them as JSON.

    python -m benchmarks.run [--only core,sharing,...] [--out benchmarks/results/latest.json]

Each part is a module in benchmarks/ with a ``run() -> dict`` function; its figures and whether
they reach the targets the issues name are printed and saved together.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

PARTS = ("core", "sharing_curve", "scrape", "load", "profiling", "tuner", "ksm_convergence", "balloon_static")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to run")
    ap.add_argument("--out", default="benchmarks/results/latest.json")
    args = ap.parse_args(argv)
    figures: dict = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "cpus": os.cpu_count(), "load_at_start": os.getloadavg()[0]}}
    for name in args.only.split(","):
        name = name.strip()
        if name not in PARTS:
            print(f"unknown part {name!r} (parts: {', '.join(PARTS)})", file=sys.stderr)
            return 2
        module = importlib.import_module(f"benchmarks.{name}")
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        figures[name] = module.run()
        figures[name]["bench_wall_s"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(figures[name], indent=2), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
