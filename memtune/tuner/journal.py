"""The run journal: one JSON object per line, appended and flushed (and fsync'ed) per record.

Records (``"type"``):

- ``start``: the run's configuration (scenario, seed, space, objective, budget ...); a resumed run
  must match it in everything that changes the results;
- ``batch``: the points asked for batch ``b`` (evaluation indices ``first`` ..), written before any
  of them runs, so a resumed run re-runs exactly the points that were in flight;
- ``eval``: one finished evaluation: index, point, feasible, per-VM metrics, objective, seeds;
- ``resume``: a resumed run started here; ``end``: the loop stopped (and why).

A line cut short by a kill (the last one, not ending in a newline) is dropped on reading and cut
off before appending. Nothing is ever unpickled or evaluated: the journal is plain JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtune.errors import ConfigError

VERSION = 1


@dataclass
class JournalState:
    """What a journal holds, indexed for resuming."""

    start: dict[str, Any] | None = None
    batches: dict[int, dict[str, Any]] = field(default_factory=dict)
    evals: dict[int, dict[str, Any]] = field(default_factory=dict)
    resumes: int = 0
    torn_bytes: int = 0


def read_journal(path: Path) -> JournalState:
    """Parse ``path``; a bad line other than a torn last one is a ConfigError naming the line."""
    state = JournalState()
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()          # after the last newline: empty, or a record cut short
    state.torn_bytes = len(tail)
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"not a JSON record: {exc}", source=str(path), field=f"line {n}") from None
        if not isinstance(rec, dict) or "type" not in rec:
            raise ConfigError("not a journal record", source=str(path), field=f"line {n}")
        kind = rec["type"]
        if kind == "start":
            if state.start is not None:
                raise ConfigError("second start record", source=str(path), field=f"line {n}")
            if rec.get("version") != VERSION:
                raise ConfigError(f"journal version {rec.get('version')!r}, this memtune writes {VERSION}",
                                  source=str(path), field=f"line {n}")
            state.start = rec
        elif kind == "batch":
            state.batches[int(rec["batch"])] = rec
        elif kind == "eval":
            idx = int(rec["index"])
            if idx in state.evals:
                raise ConfigError(f"evaluation {idx} recorded twice", source=str(path), field=f"line {n}")
            state.evals[idx] = rec
        elif kind == "resume":
            state.resumes += 1
    if state.start is None:
        raise ConfigError("no start record: not a memtune journal", source=str(path))
    return state


class Journal:
    """Appends records to ``path`` (created if missing), each flushed and fsync'ed."""

    def __init__(self, path: Path, *, truncate_tail: int = 0) -> None:
        self.path = Path(path)
        if truncate_tail and self.path.exists():
            size = self.path.stat().st_size
            with open(self.path, "r+b") as f:
                f.truncate(size - truncate_tail)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, separators=(",", ":"), default=_plain) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _plain(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
