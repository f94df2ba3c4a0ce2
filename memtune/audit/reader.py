"""Read records for display and pick the ones asked for (``memtune audit show``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memtune.audit.chain import FIELDS
from memtune.inputs import read_bytes


@dataclass(frozen=True)
class AuditRecord:
    """One parsed record and the line it came from."""

    line: int
    seq: int
    time: float
    kind: str
    vm: str | None
    data: dict[str, Any]
    raw: dict[str, Any]


def read_records(path: str | Path) -> tuple[list[AuditRecord], list[int]]:
    """Every record of a log and the numbers of lines that are not records (not checked: that is
    ``verify``'s job). An unreadable file is a :class:`UserError`."""
    data = read_bytes(path, "the audit log")
    out: list[AuditRecord] = []
    bad: list[int] = []
    for i, line in enumerate(data.splitlines(), start=1):
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            bad.append(i)
            continue
        if not isinstance(rec, dict) or not set(FIELDS) <= set(rec) or not isinstance(rec["data"], dict):
            bad.append(i)
            continue
        try:
            out.append(AuditRecord(i, int(rec["seq"]), float(rec["time"]), str(rec["kind"]), rec["vm"],
                                   rec["data"], rec))
        except (TypeError, ValueError):
            bad.append(i)
    return out, bad


def filter_records(records: Iterable[AuditRecord], *, vm: str | None = None, kinds: Iterable[str] = (),
                   since: float | None = None) -> Iterator[AuditRecord]:
    """Records of VM ``vm`` (exact name), of one of ``kinds``, at or after simulated time ``since``.

    Host-wide records that carry a per-VM table naming ``vm`` (a plugin's ``reclaim`` or ``share``
    event with ``bytes = {vm: ...}``, the ``policy`` record's ``vms``) are about that VM too.
    """
    kinds = set(kinds)
    for r in records:
        if vm is not None and r.vm != vm and not (r.vm is None and _names(r.data, vm)):
            continue
        if kinds and r.kind not in kinds:
            continue
        if since is not None and r.time < since:
            continue
        yield r


def _names(data: dict[str, Any], vm: str) -> bool:
    return any(isinstance(v, dict) and vm in v for v in data.values())
