"""Reading an ``esxtop -b`` batch CSV: the memory counters of the host and of each memory group.

Format (esxtop batch mode, vSphere Monitoring and Performance guide "Using Batch Mode", writes
Windows perfmon "PDH-CSV 4.0"): the first row is the header, every field quoted; the first column
is the timestamp ``"(PDH-CSV 4.0) (UTC)(0)"`` with values such as ``"05/15/2017 06:49:37"``; the
other columns are ``\\\\HOST\\OBJECT(INSTANCE)\\COUNTER``, e.g.
``"\\\\esx01\\Group Memory(123:web-01)\\Touched MBytes"`` or ``"\\\\esx01\\Memory\\Machine MBytes"``.
Only ``Memory`` (host) and ``Group Memory`` columns are kept while streaming (full captures have
thousands of columns); the other objects are counted for the report.
"""

from __future__ import annotations

import csv
import datetime as _dt
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memtune.core.names import name_problem, one_line
from memtune.errors import UserError
from memtune.inputs import check_regular

TIMESTAMP_PREFIX = "(PDH-CSV 4.0)"
_TS_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f")


@dataclass
class Capture:
    """A parsed batch CSV: times (s from the first sample), host and per-group counter series."""

    path: str
    host_name: str
    seconds: np.ndarray
    host: dict[str, np.ndarray]
    groups: dict[tuple[str, str], dict[str, np.ndarray]]
    other_objects: Counter = field(default_factory=Counter)
    bad_values: int = 0


@dataclass
class _Columns:
    """The header's memory columns: their indices and owners, the host's name, the rest counted."""

    keep: list[int] = field(default_factory=list)
    where: list[tuple[str, Any]] = field(default_factory=list)  # ("host", counter), ((gid, name), counter)
    host_name: str = ""
    others: Counter = field(default_factory=Counter)


def _parse_time(text: str, path: str, row: int) -> float:
    for fmt in _TS_FORMATS:
        try:
            return _dt.datetime.strptime(text.strip(), fmt).replace(tzinfo=_dt.UTC).timestamp()
        except ValueError:
            continue
    raise UserError(f"row {row}: cannot read timestamp {text!r} (expected MM/DD/YYYY HH:MM:SS)", source=path)


def _split_column(name: str) -> tuple[str, str, str | None, str] | None:
    """(host, object, instance, counter) of ``\\\\HOST\\OBJECT(INSTANCE)\\COUNTER``."""
    if not name.startswith("\\\\"):
        return None
    rest = name[2:]
    if "\\" not in rest:
        return None
    host, remainder = rest.split("\\", 1)
    if "\\" not in remainder:
        return None
    obj, counter = remainder.rsplit("\\", 1)
    m = re.match(r"^([^(]+)\((.*)\)$", obj, re.DOTALL)
    if m:
        return host, m.group(1), m.group(2), counter
    return host, obj, None, counter


def read_batch_csv(path: str | Path) -> Capture:
    """Parse an ``esxtop -b`` CSV; raise UserError (one line) if it is not one."""
    src = str(path)
    check_regular(path, "the esxtop capture")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next((r for r in reader if r), None)
            if header is None or not header[0].startswith(TIMESTAMP_PREFIX):
                raise UserError(f"not an esxtop batch CSV (the first header field should start with "
                                f"{TIMESTAMP_PREFIX!r})", source=src)
            columns = _memory_columns(header, src)
            times, cells, lines = _samples(reader, header, columns.keep, src)
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", source=src) from None
    except UnicodeDecodeError:
        raise UserError("cannot read: not a text file", source=src) from None
    except csv.Error as exc:
        raise UserError(f"not a CSV file: {exc}", source=src) from None
    if not times:
        raise UserError("no samples after the header", source=src)
    seconds = np.array(times)
    seconds -= seconds[0]
    if np.any(np.diff(seconds) <= 0):
        raise UserError("timestamps are not increasing", source=src)
    values, bad = _numbers(cells, len(columns.keep))
    _check_cells(values, cells, lines, [header[j] for j in columns.keep], columns.keep, src)
    host: dict[str, np.ndarray] = {}
    groups: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for k, (owner, counter) in enumerate(columns.where):
        if owner == "host":
            host[counter] = values[:, k]
        else:
            groups.setdefault(owner, {})[counter] = values[:, k]
    return Capture(src, columns.host_name, seconds, host, groups, columns.others, bad)


def _memory_columns(header: list[str], src: str) -> _Columns:
    """The host's ``Memory`` and the groups' ``Group Memory(ID:NAME)`` columns of the header; a group
    name no export target can hold is an error naming the column."""
    cols = _Columns()
    for j, name in enumerate(header[1:], start=1):
        parts = _split_column(name)
        if parts is None:
            cols.others[f"(unrecognised column) {name}"] += 1
            continue
        h, obj, inst, counter = parts
        cols.host_name = cols.host_name or h
        if obj == "Memory" and inst is None:
            cols.where.append(("host", counter))
        elif obj == "Group Memory" and inst is not None:
            gid, _, gname = inst.partition(":")
            if (problem := name_problem(gname or gid)) is not None:
                raise UserError(f"header column {j + 1}: VM group {inst!r}: {problem}", source=src)
            cols.where.append(((gid, gname or gid), counter))
        else:
            cols.others[obj] += 1
            continue
        cols.keep.append(j)
    return cols


def _samples(
    reader: Any, header: list[str], keep: list[int], src: str
) -> tuple[list[float], list[list[str]], list[int]]:
    """(time, the kept cells, CSV line) of every sample row; a row of the wrong length or with an
    unreadable timestamp is an error naming the row."""
    times: list[float] = []
    cells: list[list[str]] = []
    lines: list[int] = []
    for r in reader:
        if not r:
            continue
        row = reader.line_num
        lines.append(row)
        if len(r) != len(header):
            raise UserError(f"row {row} has {len(r)} fields, the header has {len(header)}", source=src)
        times.append(_parse_time(r[0], src, row))
        cells.append([r[j] for j in keep])
    return times, cells, lines


def _numbers(cells: list[list[str]], ncols: int) -> tuple[np.ndarray, int]:
    """Rows of text cells as a float array; empty or non-numeric cells become NaN (counted)."""
    try:
        return np.array(cells, dtype=np.float64).reshape(len(cells), ncols), 0
    except ValueError:
        pass
    out = np.full((len(cells), ncols), np.nan)
    bad = 0
    for i, row in enumerate(cells):
        for j, v in enumerate(row):
            try:
                out[i, j] = float(v)
            except ValueError:
                bad += 1
    return out, bad


MAX_CELL = 1e12  # MBytes or percent: above any host's memory (an exabyte); a larger value is garbage


def _check_cells(
    values: np.ndarray,
    cells: list[list[str]],
    lines: list[int],
    names: list[str],
    columns: list[int],
    src: str,
) -> None:
    """Memory counters are finite and non-negative: ``nan``, ``inf`` or ``-1e30`` in a capture is an
    error naming the row and column, never a number the fit believes. (Empty or non-numeric cells,
    as esxtop writes for a group not running, stay skipped.)"""
    with np.errstate(invalid="ignore"):
        bad = np.isinf(values) | (values < 0) | (values > MAX_CELL)
    for i, k in zip(*np.nonzero(np.isnan(values)), strict=True):
        if cells[i][k].strip().lower().lstrip("+-") == "nan":
            bad[i, k] = True
    if bad.any():
        i, k = (int(x[0]) for x in np.nonzero(bad))
        raise UserError(
            f"row {lines[i]}, column {columns[k] + 1} ({one_line(names[k])}): {cells[i][k]!r} is not "
            f"a finite number within 0 .. {MAX_CELL:g}",
            source=src,
        )
