"""The run journal: one JSON object per line, appended and flushed (and fsync'ed) per record.

Records (``"type"``):

- ``start``: the run's configuration (scenario, seed, space, objective, budget ...); a resumed run
  must match it in everything that changes the results;
- ``batch``: the points asked for batch ``b`` (evaluation indices ``first`` ..), written before any
  of them runs, so a resumed run re-runs exactly the points that were in flight;
- ``eval``: one finished evaluation: index, point, feasible, per-VM metrics, objective, seeds;
- ``probe``: the seeds the baseline was probed on and those the evaluations use
  (:mod:`memtune.tuner.seeds`), written before the first batch;
- ``resume``: a resumed run started here; ``end``: the loop stopped (and why).

A line cut short by a kill (the last one, not ending in a newline) is dropped on reading and cut
off before appending. Nothing is ever unpickled or evaluated: the journal is plain JSON, and every
record is checked for its fields' types and ranges on reading (a hand-edited negative stall is an
error naming the line, not a number the resumed search believes).

:func:`open_journal` is how a run gets its journal: it locks the output directory first
(:class:`memtune.tuner.outdir.DirLock`; the journal holds the lock until it is closed), so two runs
never append to one journal.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtune.errors import ConfigError, OutputError, UserError
from memtune.inputs import read_bytes
from memtune.tuner.outdir import DirLock
from memtune.tuner.seeds import check_probe

VERSION = 1


@dataclass
class JournalState:
    """What a journal holds, indexed for resuming."""

    start: dict[str, Any] | None = None
    batches: dict[int, dict[str, Any]] = field(default_factory=dict)
    evals: dict[int, dict[str, Any]] = field(default_factory=dict)
    probe: dict[str, Any] | None = None
    resumes: int = 0
    torn_bytes: int = 0


def read_journal(path: Path) -> JournalState:
    """Parse ``path``; a bad line other than a torn last one is a ConfigError naming the line."""
    state = JournalState()
    data = read_bytes(path, "the journal", error=ConfigError)
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
        problem = check_record(rec)
        if problem:
            raise ConfigError(f"{problem} (the journal was edited or damaged)", source=str(path),
                              field=f"line {n}")
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
        elif kind == "probe":
            state.probe = rec
        elif kind == "resume":
            state.resumes += 1
    if state.start is None:
        raise ConfigError("no start record: not a memtune journal", source=str(path))
    return state


def _is_int(v: Any) -> bool:
    return type(v) is int and v >= 0


def _number(v: Any, lo: float = 0.0, hi: float = math.inf) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and lo <= v <= hi


# metric -> (lowest, highest) of every value an evaluation records (per VM lists or one number)
METRIC_RANGES = {"stall": (0.0, 1.0), "mean_latency": (0.0, math.inf), "p99_latency": (0.0, math.inf),
                 "reserved": (0.0, math.inf), "reserved_share": (0.0, math.inf)}


def check_record(rec: dict[str, Any]) -> str | None:
    """What is wrong with one journal record's fields (types, ranges), or None."""
    kind = rec["type"]
    if kind == "batch":
        if not (_is_int(rec.get("batch")) and _is_int(rec.get("first"))):
            return "batch record: batch and first must be whole numbers >= 0"
        if not (isinstance(rec.get("points"), list) and all(isinstance(p, list) for p in rec["points"])):
            return "batch record: points must be a list of points"
    elif kind == "eval":
        return _check_eval(rec)
    elif kind == "probe":
        return check_probe(rec)
    return None


def _check_eval(rec: dict[str, Any]) -> str | None:
    where = f"evaluation {rec.get('index')!r}"
    for key in ("index", "batch"):
        if not _is_int(rec.get(key)):
            return f"{where}: {key} is {rec.get(key)!r}, must be a whole number >= 0"
    if not isinstance(rec.get("x"), list) or not isinstance(rec.get("point"), dict):
        return f"{where}: x must be a list and point a table"
    if type(rec.get("feasible")) is not bool:
        return f"{where}: feasible is {rec.get('feasible')!r}, must be true or false"
    value = rec.get("value")
    if value is not None and not _number(value):
        return f"{where}: value is {value!r}, must be a finite number >= 0"
    if rec["feasible"] and value is None:
        return f"{where}: a feasible evaluation without a value"
    seeds = rec.get("seeds", [])
    if not (isinstance(seeds, list) and all(_is_int(x) for x in seeds)):
        return f"{where}: seeds must be whole numbers >= 0"
    if not _number(rec.get("elapsed", 0.0)):
        return f"{where}: elapsed is {rec.get('elapsed')!r}, must be a finite number of seconds >= 0"
    metrics = rec.get("metrics")
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        return f"{where}: metrics must be a table"
    for name, (lo, hi) in METRIC_RANGES.items():
        if name not in metrics:
            continue
        values = metrics[name] if isinstance(metrics[name], list) else [metrics[name]]
        for i, v in enumerate(values):
            if not _number(v, lo, hi):
                at = f"metrics.{name}[{i}]" if isinstance(metrics[name], list) else f"metrics.{name}"
                return f"{where}: {at} is {v!r}, must be a finite number within {lo:g}..{hi:g}"
    return None


class Journal:
    """Appends records to ``path`` (created if missing), each flushed and fsync'ed. With ``lock``
    (the output directory's), closing the journal releases it."""

    def __init__(self, path: Path, *, truncate_tail: int = 0, lock: DirLock | None = None) -> None:
        self.path = Path(path)
        self.lock = lock
        if truncate_tail and self.path.exists():
            size = self.path.stat().st_size
            with open(self.path, "r+b") as f:
                f.truncate(size - truncate_tail)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._f.write(json.dumps(record, separators=(",", ":"), default=_plain) + "\n")
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as exc:
            raise OutputError(f"cannot append to the journal: {exc.strerror or exc}; it keeps every record "
                              f"before this one (--resume continues from there)",
                                  source=str(self.path)) from exc

    def close(self) -> None:
        if not self._f.closed:
            with contextlib.suppress(OSError):  # a record that did not fit was reported already
                self._f.close()
        if self.lock is not None:
            self.lock.release()


def open_journal(
    path: Path,
    *,
    resume: bool,
    start: dict[str, Any],
    must_match: Sequence[str],
    plugins: Mapping[str, Any] | None = None,
) -> tuple[Journal, JournalState | None]:
    """The journal of a run in ``path.parent``, locked for this process.

    Fresh (``resume`` false): refuses a directory that already holds a run and writes ``start``.
    Resumed: refuses a directory with nothing to resume, reads the journal and checks that its start
    record matches ``start`` in every key of ``must_match`` (naming what differs, and for the search
    space the knobs and the plugins, ``plugins``: name -> PluginInfo, that bring them); returns the
    journal's state for the caller to replay."""
    out = path.parent
    if resume and not path.is_file():
        what = "does not exist" if not out.exists() else f"holds no {path.name}"
        raise UserError(
            f"nothing to resume: {str(out)!r} {what} (mistyped? without --resume a new run starts there)",
            field="--out",
        )
    lock = DirLock(out)
    try:
        if resume:
            state = read_journal(path)
            for key in must_match:
                if state.start.get(key) != start[key]:
                    raise ConfigError(
                        mismatch(key, state.start.get(key), start[key], plugins or {}),
                        source=str(path),
                        field=key,
                    )
            return Journal(path, truncate_tail=state.torn_bytes, lock=lock), state
        if path.exists():
            raise UserError(
                f"{out} already holds a tuning run; use --resume to continue it or another --out",
                field="--out",
            )
        journal = Journal(path, lock=lock)
        journal.write({**start, "time": time.time()})
        return journal, None
    except BaseException:
        lock.release()
        raise


_AGAIN = "resume with the same scenario, flags and plugins, or use another --out"


def mismatch(key: str, old: Any, new: Any, plugins: Mapping[str, Any]) -> str:
    """One line saying how this run's ``key`` differs from the journal's."""
    if key == "space" and isinstance(old, list) and isinstance(new, list):
        return f"the search space differs from the journal's: {space_difference(old, new, plugins)}; {_AGAIN}"
    if key == "plugins" and isinstance(old, list) and isinstance(new, list):
        parts = []
        added = [n for n in new if n not in old]
        gone = [n for n in old if n not in new]
        if added:
            parts.append(
                "loaded now, not in the journal's run: " + ", ".join(_plugin(n, plugins) for n in added)
            )
        if gone:
            parts.append("in the journal's run, not loaded now: " + ", ".join(gone))
        return f"the plugins differ from the journal's ({'; '.join(parts) or 'order'}); {_AGAIN}"
    return f"this run's {key} ({_short(new)}) differs from the journal's ({_short(old)}); {_AGAIN}"


def space_difference(old: list[Any], new: list[Any], plugins: Mapping[str, Any]) -> str:
    """Which knobs only one space has, or has with other bounds, each with the plugin that owns it."""

    def dims(sig: list[Any]) -> dict[str, dict[str, Any]]:
        return {d["name"]: d for d in sig if isinstance(d, dict) and "name" in d}

    def extras(sig: list[Any]) -> dict[str, Any]:
        return {k: v for d in sig if isinstance(d, dict) and "name" not in d for k, v in d.items()}

    a, b = dims(old), dims(new)
    parts = []
    added = [n for n in b if n not in a]
    gone = [n for n in a if n not in b]
    changed = [n for n in b if n in a and a[n] != b[n]]
    if added:
        parts.append("knobs not in the journal's run: " + _knobs(added, b, plugins))
    if gone:
        parts.append("knobs only in the journal's run: " + _knobs(gone, a, {}))
    if changed:
        parts.append("knobs with other ranges or choices: " + _knobs(changed, b, plugins))
    ea, eb = extras(old), extras(new)
    parts += [f"{k} differ" for k in sorted(set(ea) | set(eb)) if ea.get(k) != eb.get(k)]
    return "; ".join(parts) or "in the order of its knobs"


def _knobs(names: list[str], dims: dict[str, dict[str, Any]], plugins: Mapping[str, Any]) -> str:
    by_owner: dict[str, list[str]] = {}
    for n in names:
        by_owner.setdefault(str(dims[n].get("owner", "?")), []).append(n)
    return ", ".join(f"{', '.join(ns)} (plugin {_plugin(owner, plugins)})" for owner, ns in by_owner.items())


def _plugin(name: str, plugins: Mapping[str, Any]) -> str:
    info = plugins.get(name)
    if info is None or getattr(info, "source", None) == "builtin":
        return repr(name)
    version = f" {info.version}" if getattr(info, "version", None) else ""
    return f"{name!r} from {getattr(info, 'source', '?')} {info.module}{version}"


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _plain(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
