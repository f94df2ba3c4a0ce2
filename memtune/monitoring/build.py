"""The three memtune dashboards as data; ``python -m memtune.monitoring.build`` writes their JSON.

Host overview (``memtune-host``, :mod:`memtune.monitoring.host_dashboard`), VM drill-down
(``memtune-vm``, :mod:`memtune.monitoring.vm_dashboard`), tuner progress (``memtune-tuner``,
:mod:`memtune.monitoring.tuner_dashboard`). Heavy expressions come from the recording rules in
``rules/memtune.rules.yml``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from memtune.monitoring.host_dashboard import host_overview
from memtune.monitoring.tuner_dashboard import tuner
from memtune.monitoring.vm_dashboard import vm_drilldown

DASHBOARDS = {"host-overview.json": host_overview, "vm-drilldown.json": vm_drilldown, "tuner.json": tuner}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write the dashboards into ``memtune/monitoring/dashboards/`` (or the folder given)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).parent / "dashboards"
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (out / name).write_text(render(name))


if __name__ == "__main__":
    main()
