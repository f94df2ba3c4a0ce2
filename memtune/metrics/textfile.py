"""Write a host's final state in the Prometheus text format (``memtune simulate --metrics-out``).

The file suits node_exporter's textfile collector: it is written to a temporary file and renamed
into place (as ``prometheus_client.write_to_textfile`` does), so a collector never reads half a file.
The text comes from the same fast renderer as ``/metrics`` (``generate_latest`` takes ~200 ms on a
256-VM host, the renderer a few ms).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from memtune.errors import UserError
from memtune.metrics.collector import host_registry

if TYPE_CHECKING:
    from memtune.core.host import Host


def write_textfile(host: Host, path: str | os.PathLike[str]) -> None:
    """Write every metric of ``host`` (core and plugin families) to ``path``."""
    write_body(host_registry(host).render_body(), path)


def write_body(body: bytes, path: str | os.PathLike[str]) -> None:
    """Write an exposition to ``path``: renamed into place, or written into a device or pipe."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"directory {parent!r} does not exist", source=path, field="--metrics-out")
    if os.path.exists(path) and not os.path.isfile(path):
        # a device or pipe (/dev/stdout, a FIFO): write into it; a rename would replace the node
        try:
            with open(path, "wb") as f:
                f.write(body)
        except OSError as exc:
            raise UserError(f"cannot write metrics: {exc.strerror or exc}", source=path,
                            field="--metrics-out") from None
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"cannot write metrics: {exc.strerror or exc}", source=path,
                        field="--metrics-out") from None
