"""``esxtop -b`` batch CSV -> scenario: one VM per memory group, workloads fitted to the touched series.

Format (esxtop batch mode is Windows perfmon "PDH-CSV 4.0"): the first row is the header, every
field quoted; the first column is the timestamp ``"(PDH-CSV 4.0) (UTC)(0)"`` with values such as
``"05/15/2017 06:49:37"``; the other columns are ``\\\\HOST\\OBJECT(INSTANCE)\\COUNTER``, e.g.
``"\\\\esx01\\Group Memory(123:web-01)\\Touched MBytes"`` or ``"\\\\esx01\\Memory\\Machine MBytes"``.
vSphere's "MBytes" are MiB.

What is used
    host memory     ``Memory\\Machine MBytes`` (median over the capture; ``--host-memory`` overrides)
    VM size         ``Group Memory(ID:NAME)\\Memory Size MBytes`` (MEMSZ)
    working set     ``Touched MBytes`` (TCHD, the sampled active memory ESX uses for the idle tax) as a
                    share of MEMSZ; without it, ``% Active Estimate`` (ACTV as % of MEMSZ), said so
    allocated       ``Memory Granted Size MBytes`` (GRANT: guest memory backed at least once)
    write fraction  ``Touched Write MBytes`` / ``Touched MBytes`` (TCHD_W / TCHD)
    observed        ``Memory Consumed Size MBytes``, ``Target Size MBytes``, ``Swapped MBytes``,
                    ``Compressed Memory MBytes``, ``Shared Saved MBytes``, ``Overhead MBytes``: kept
                    as comments in the scenario to compare a simulation with
Every other column is listed in the report (unused counters, other objects); groups without a MEMSZ
(resource pools such as ``system`` or ``vim``) are skipped and listed.

Workload kind (per VM, from the working-set share ``x(t)``)
    constant        the series varies by less than 10 % of its mean (or 1 % of MEMSZ)
    diurnal         a sinusoid ``b + A sin(2 pi t / P + phi)`` (P from 1/8 of the capture to all of it)
                    explains >= 80 % of the variance and starts near its mean going up (|phi| <= pi/8),
                    as the model's diurnal workload does
    phased          otherwise, if steps found by binary segmentation (least squares, at most 8 phases,
                    each split must remove >= 10 % of the variance) explain >= 50 % of it
    constant        otherwise, at the mean, with the poor fit reported
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memtune.core.names import name_problem, one_line
from memtune.errors import UserError

MiB = 1 << 20
TIMESTAMP_PREFIX = "(PDH-CSV 4.0)"
SYSTEM_GROUPS = {"system", "vim", "iofilters", "idle", "helper", "drivers", "ft", "vmotion", "user", "host",
                 "vimsh", "init", "tmp", "hostd", "vpxa"}   # esxtop resource-pool groups, not VMs
USED = {"Memory Size MBytes", "Touched MBytes", "Memory Granted Size MBytes", "Touched Write MBytes",
        "% Active Estimate"}
OBSERVED = ("Memory Consumed Size MBytes", "Target Size MBytes", "Swapped MBytes", "Compressed Memory MBytes",
            "Shared Saved MBytes", "Overhead MBytes")
HOST_MEMORY = "Machine MBytes"
CONSTANT_CV = 0.10          # model choice: below 10 % relative variation a workload is constant
DIURNAL_R2 = 0.80
DIURNAL_PHASE = math.pi / 8
PHASED_R2 = 0.50
SPLIT_GAIN = 0.10
MAX_PHASES = 8
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
    """Parse an ``esxtop -b`` CSV; raise UserError (one line) if it is not one.

    Full captures have thousands of columns; only the memory columns are kept while streaming."""
    src = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next((r for r in reader if r), None)
            if header is None or not header[0].startswith(TIMESTAMP_PREFIX):
                raise UserError(f"not an esxtop batch CSV (the first header field should start with "
                                f"{TIMESTAMP_PREFIX!r})", source=src)
            keep: list[int] = []
            where: list[tuple[str, Any]] = []      # ("host", counter) or ((gid, name), counter)
            host_name = ""
            others: Counter = Counter()
            for j, name in enumerate(header[1:], start=1):
                parts = _split_column(name)
                if parts is None:
                    others[f"(unrecognised column) {name}"] += 1
                    continue
                h, obj, inst, counter = parts
                host_name = host_name or h
                if obj == "Memory" and inst is None:
                    where.append(("host", counter))
                elif obj == "Group Memory" and inst is not None:
                    gid, _, gname = inst.partition(":")
                    if (problem := name_problem(gname or gid)) is not None:
                        raise UserError(f"header column {j + 1}: VM group {inst!r}: {problem}", source=src)
                    where.append(((gid, gname or gid), counter))
                else:
                    others[obj] += 1
                    continue
                keep.append(j)
            times: list[float] = []
            cells: list[list[str]] = []
            lines: list[int] = []
            for r in reader:
                if not r:
                    continue
                row = reader.line_num
                lines.append(row)
                if len(r) != len(header):
                    raise UserError(f"row {row} has {len(r)} fields, the header has {len(header)}",
                                    source=src)
                times.append(_parse_time(r[0], src, row))
                cells.append([r[j] for j in keep])
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
    values, bad = _numbers(cells, len(keep))
    _check_cells(values, cells, lines, [header[j] for j in keep], keep, src)
    host: dict[str, np.ndarray] = {}
    groups: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for k, (owner, counter) in enumerate(where):
        if owner == "host":
            host[counter] = values[:, k]
        else:
            groups.setdefault(owner, {})[counter] = values[:, k]
    return Capture(src, host_name, seconds, host, groups, others, bad)


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


# --- fitting -------------------------------------------------------------------------------------


@dataclass
class Fit:
    """A workload shape fitted to a working-set series (shares of MEMSZ)."""

    kind: str
    wss: float
    r2: float | None = None
    period: float | None = None
    amplitude: float | None = None
    phases: list[tuple[float, float]] = field(default_factory=list)  # (at seconds, wss)
    note: str = ""

    def peak(self) -> float:
        if self.kind == "diurnal":
            return self.wss * (1 + (self.amplitude or 0.0))
        return max([self.wss] + [w for _, w in self.phases])


def _r2(x: np.ndarray, model: np.ndarray) -> float:
    sst = float(((x - x.mean()) ** 2).sum())
    return 1.0 - float(((x - model) ** 2).sum()) / sst if sst > 0 else 1.0


def fit_sinusoid(t: np.ndarray, x: np.ndarray) -> tuple[float, float, float, float, float]:
    """Best (period, base, amplitude, phase, R^2) of ``b + A sin(2 pi t / P + phi)`` over a grid of
    periods from 1/8 of the span to the span (one full cycle at least)."""
    span = float(t[-1] - t[0]) + (float(np.median(np.diff(t))) if t.size > 1 else 0.0)
    periods = np.geomspace(span / 8, span, 240)
    best = (span, float(x.mean()), 0.0, 0.0, -np.inf)
    for p in periods:
        w = 2 * np.pi * t / p
        a = np.column_stack([np.ones_like(t), np.sin(w), np.cos(w)])
        coef, *_ = np.linalg.lstsq(a, x, rcond=None)
        r2 = _r2(x, a @ coef)
        if r2 > best[4]:
            amp = float(math.hypot(coef[1], coef[2]))
            best = (float(p), float(coef[0]), amp, float(math.atan2(coef[2], coef[1])), r2)
    return best


def segment(x: np.ndarray, min_len: int) -> list[int]:
    """Start indices of the steps of ``x`` found by binary segmentation (least squares)."""
    total = float(((x - x.mean()) ** 2).sum())
    cuts = [0, x.size]
    if total <= 0:
        return [0]
    while len(cuts) - 1 < MAX_PHASES:
        best_gain, best_cut = 0.0, None
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            seg = x[lo:hi]
            n = seg.size
            if n < 2 * min_len:
                continue
            c1 = np.cumsum(seg)
            c2 = np.cumsum(seg * seg)
            k = np.arange(min_len, n - min_len + 1)
            left = c2[k - 1] - c1[k - 1] ** 2 / k
            right = (c2[-1] - c2[k - 1]) - (c1[-1] - c1[k - 1]) ** 2 / (n - k)
            sse_whole = c2[-1] - c1[-1] ** 2 / n
            gains = sse_whole - (left + right)
            j = int(np.argmax(gains))
            if gains[j] > best_gain:
                best_gain, best_cut = float(gains[j]), lo + int(k[j])
        if best_cut is None or best_gain < SPLIT_GAIN * total:
            break
        cuts = sorted(cuts + [best_cut])
    return cuts[:-1]


def fit_workload(t: np.ndarray, x: np.ndarray) -> Fit:
    """Constant, diurnal or phased, by the rules in the module docstring."""
    ok = np.isfinite(x)
    t, x = t[ok], x[ok]
    if x.size == 0:
        return Fit("constant", 0.0, note="no valid samples")
    mean = float(x.mean())
    spread = float(x.std())
    if x.size < 4 or spread <= max(CONSTANT_CV * mean, 0.01):
        return Fit("constant", mean, note=f"varies by {spread / mean:.1%} of its mean" if mean else "")
    period, base, amp, phase, r2s = fit_sinusoid(t, x)
    if r2s >= DIURNAL_R2 and abs(phase) <= DIURNAL_PHASE and base > 0:
        return Fit(
            "diurnal",
            base,
            r2=r2s,
            period=period,
            amplitude=min(1.0, amp / base),
            note=f"sinusoid R^2 {r2s:.2f}",
        )
    cuts = segment(x, max(2, x.size // 20))
    levels = [float(x[a:b].mean()) for a, b in zip(cuts, cuts[1:] + [x.size], strict=True)]
    model = np.concatenate(
        [np.full(b - a, lv) for a, b, lv in zip(cuts, cuts[1:] + [x.size], levels, strict=True)]
    )
    r2p = _r2(x, model)
    why = (
        f"; sinusoid R^2 {r2s:.2f} but phase {phase:+.2f} rad at the start of the capture"
        if r2s >= DIURNAL_R2
        else ""
    )
    if len(cuts) > 1 and r2p >= PHASED_R2:
        return Fit(
            "phased",
            levels[0],
            r2=r2p,
            phases=[(float(t[c]), lv) for c, lv in zip(cuts[1:], levels[1:], strict=True)],
            note=f"{len(cuts)} steps R^2 {r2p:.2f}{why}",
        )
    return Fit(
        "constant",
        mean,
        r2=max(r2p, r2s),
        note=f"no shape explains the series (steps R^2 {r2p:.2f}, sinusoid R^2 {r2s:.2f}); mean used",
    )


# --- scenario ------------------------------------------------------------------------------------


def _round(v: float, digits: int = 4) -> float:
    return float(round(v, digits))


def _mib(v: float) -> str:
    return f"{int(round(v))} MiB"


def to_scenario(
    cap: Capture, *, host_memory: int | None = None, name: str | None = None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(scenario data, report lines, observed-comment lines) for a parsed capture."""
    report: list[str] = []
    observed: list[str] = []
    src = cap.path
    if host_memory is None:
        machine = cap.host.get(HOST_MEMORY)
        if machine is None or not np.isfinite(machine).any():
            raise UserError(
                f"no host memory column \\\\HOST\\Memory\\{HOST_MEMORY} (give --host-memory)", source=src
            )
        host_memory = int(round(float(np.nanmedian(machine)) * MiB))
        report.append(f"host {cap.host_name or '?'}: {host_memory / MiB:.0f} MiB from Memory\\{HOST_MEMORY}")
    else:
        report.append(f"host memory {host_memory / MiB:.0f} MiB from --host-memory")
    unused_host = sorted(set(cap.host) - {HOST_MEMORY})
    if unused_host:
        report.append(f"unused host counters: {', '.join(unused_host)}")
    t = cap.seconds
    step = float(np.median(np.diff(t))) if t.size > 1 else 60.0
    duration = float(t[-1]) + step
    vms: list[dict[str, Any]] = []
    unused: Counter = Counter()
    names_seen: set[str] = set()
    sizes_mb: list[tuple[float, str]] = []
    for (gid, gname), counters in cap.groups.items():
        for c in counters:
            if c not in USED and c not in OBSERVED:
                unused[c] += 1
        memsz = counters.get("Memory Size MBytes")
        if gname in SYSTEM_GROUPS:
            report.append(f"skipped group {gid}:{gname}: an ESX resource pool, not a VM")
            continue
        if memsz is None:
            report.append(f"skipped group {gid}:{gname}: no Memory Size MBytes column")
            continue
        if not np.isfinite(memsz).any() or np.nanmax(memsz) <= 0:
            report.append(f"skipped group {gid}:{gname}: Memory Size MBytes is zero or empty")
            continue
        size_mb = float(np.nanmax(memsz))
        touched = counters.get("Touched MBytes")
        if touched is not None:
            x = touched / size_mb
        elif "% Active Estimate" in counters:
            x = counters["% Active Estimate"] / 100.0
            report.append(f"{gname}: no Touched MBytes column; working set from % Active Estimate")
        else:
            report.append(f"skipped group {gid}:{gname}: neither Touched MBytes nor % Active Estimate")
            continue
        x = np.clip(x, 0.0, 1.0)
        fit = fit_workload(t, x)
        wl: dict[str, Any] = {"kind": fit.kind, "wss": _round(fit.wss)}
        if fit.kind == "diurnal":
            wl.update(period=f"{fit.period:.0f}s", amplitude=_round(fit.amplitude or 0.0))
        if fit.kind == "phased":
            wl["phases"] = [{"at": f"{at:.0f}s", "wss": _round(w)} for at, w in fit.phases]
        granted = counters.get("Memory Granted Size MBytes")
        peak = min(1.0, fit.peak())
        if granted is not None and np.isfinite(granted).any():
            alloc = float(np.nanmax(granted)) / size_mb
            how = "max Memory Granted Size MBytes"
        else:
            alloc = 1.0
            how = "no Memory Granted Size MBytes column: taken as all of MEMSZ"
        alloc = min(1.0, max(alloc, peak, wl["wss"]))
        wl["allocated"] = _round(math.ceil(alloc * 1e4) / 1e4)
        tw = counters.get("Touched Write MBytes")
        if tw is not None and touched is not None and np.nansum(touched) > 0:
            wl["write_fraction"] = _round(min(1.0, float(np.nansum(tw) / np.nansum(touched))))
        vm_name = gname if gname not in names_seen else f"{gname}-{gid}"
        if (problem := name_problem(vm_name)) is not None:
            raise UserError(f"VM group {gid}:{gname}: {problem}", source=cap.path)
        names_seen.add(vm_name)
        vms.append({"name": vm_name, "memory": _mib(size_mb), "workload": wl})
        sizes_mb.append((size_mb, vm_name))
        report.append(
            f"{vm_name}: {size_mb:.0f} MiB, {fit.kind} wss {wl['wss']:.3f}"
            + (f" ({fit.note})" if fit.note else "")
            + f"; allocated {wl['allocated']:.3f} ({how})"
        )
        obs = [
            f"{c.replace(' MBytes', '')} {float(np.nanmean(counters[c])):.0f}"
            for c in OBSERVED
            if c in counters and np.isfinite(counters[c]).any()
        ]
        missing = [c for c in OBSERVED if c not in counters]
        observed.append(
            f"{vm_name}: mean MiB: "
            + (", ".join(obs) if obs else "none")
            + (f" (missing: {', '.join(missing)})" if missing else "")
        )
    if not vms:
        raise UserError(
            "no VM groups (Group Memory(ID:NAME) with Memory Size MBytes) in the capture", source=src
        )
    for counter, n in sorted(unused.items()):
        report.append(f"unused Group Memory counter: {counter} ({n} groups)")
    for obj, n in sorted(cap.other_objects.items()):
        report.append(f"ignored: {obj} ({n} columns)")
    if cap.bad_values:
        report.append(f"{cap.bad_values} empty or non-numeric values skipped")
    tick = min(2.0, step)
    data = {
        "name": name or Path(cap.path).stem,
        "description": f"imported from esxtop batch {Path(cap.path).name} ({cap.host_name}), "
        f"{t.size} samples every {step:g} s",
        "duration": f"{duration:.0f}s",
        "tick": f"{tick:g}s",
        "seed": 0,
        "host": {"memory": _mib(host_memory / MiB)},
        "vm": vms,
    }
    big_mb, big_name = max(sizes_mb)
    if round(big_mb) > round(host_memory / MiB):
        data["host"]["allow_overcommit"] = True  # as captured: the scenario says so on purpose
        report.append(f"{big_name} ({big_mb:.0f} MiB) is larger than the host: allow_overcommit = true")
    return data, report, observed


def write_scenario(path: str | Path, data: dict[str, Any], report: list[str], observed: list[str]) -> str:
    """Render (and write, unless ``path`` is None) the scenario TOML; returns the text."""
    import tomli_w

    head = ["# scenario imported by `memtune import esxtop`", "#"]
    head += [f"# {one_line(line)}" for line in report]
    head += ["#", "# observed on the host (compare with `memtune simulate`):"]
    head += [f"#   {one_line(line)}" for line in observed]
    text = "\n".join(head) + "\n\n" + tomli_w.dumps(data)
    if path is not None:
        try:
            Path(path).write_text(text)
        except OSError as exc:
            raise UserError(f"cannot write scenario: {exc.strerror}", source=str(path)) from None
    return text
