"""Write a host's final state in the Prometheus text format (``memtune simulate --metrics-out``).

The file suits node_exporter's textfile collector: it is written to a temporary file and renamed
into place (``prometheus_client.write_to_textfile``), so a collector never reads half a file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import write_to_textfile

from memtune.errors import UserError
from memtune.metrics.collector import host_registry

if TYPE_CHECKING:
    from memtune.core.host import Host


def write_textfile(host: Host, path: str | os.PathLike[str]) -> None:
    """Write every metric of ``host`` (core and plugin families) to ``path``."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"directory {parent!r} does not exist", source=path, field="--metrics-out")
    try:
        write_to_textfile(path, host_registry(host))
    except OSError as exc:
        raise UserError(f"cannot write metrics: {exc.strerror or exc}", source=path,
                        field="--metrics-out") from None
