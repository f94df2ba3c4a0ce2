"""``esxtop -b`` batch CSV -> scenario: one VM per memory group, workloads fitted to the touched series.

The capture is read by :mod:`memtune.importers.esxtop_csv`, the workloads fitted by
:mod:`memtune.importers.workload_fit`. vSphere's "MBytes" are MiB.

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
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from memtune.core.names import name_problem, one_line
from memtune.errors import UserError
from memtune.importers.esxtop_csv import Capture
from memtune.importers.workload_fit import Fit, fit_workload

MiB = 1 << 20
SYSTEM_GROUPS = {"system", "vim", "iofilters", "idle", "helper", "drivers", "ft", "vmotion", "user", "host",
                 "vimsh", "init", "tmp", "hostd", "vpxa"}   # esxtop resource-pool groups, not VMs
USED = {"Memory Size MBytes", "Touched MBytes", "Memory Granted Size MBytes", "Touched Write MBytes",
        "% Active Estimate"}
OBSERVED = ("Memory Consumed Size MBytes", "Target Size MBytes", "Swapped MBytes", "Compressed Memory MBytes",
            "Shared Saved MBytes", "Overhead MBytes")
HOST_MEMORY = "Machine MBytes"


def _round(v: float, digits: int = 4) -> float:
    return float(round(v, digits))


def _mib(v: float) -> str:
    return f"{int(round(v))} MiB"


def to_scenario(
    cap: Capture, *, host_memory: int | None = None, name: str | None = None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(scenario data, report lines, observed-comment lines) for a parsed capture."""
    report: list[str] = []
    host_memory = _host_memory(cap, host_memory, report)
    t = cap.seconds
    step = float(np.median(np.diff(t))) if t.size > 1 else 60.0
    vms: list[dict[str, Any]] = []
    sizes_mb: list[tuple[float, str]] = []
    observed: list[str] = []
    names_seen: set[str] = set()
    for (gid, gname), counters in cap.groups.items():
        size_mb = _vm_size(gid, gname, counters, report)
        x = None if size_mb is None else _working_set(gid, gname, counters, size_mb, report)
        if size_mb is None or x is None:
            continue
        vm_name = gname if gname not in names_seen else f"{gname}-{gid}"
        if (problem := name_problem(vm_name)) is not None:
            raise UserError(f"VM group {gid}:{gname}: {problem}", source=cap.path)
        names_seen.add(vm_name)
        vms.append({"name": vm_name, "memory": _mib(size_mb), "workload": _workload(t, x, counters, size_mb,
                                                                                    vm_name, report)})
        sizes_mb.append((size_mb, vm_name))
        observed.append(_observed(vm_name, counters))
    if not vms:
        raise UserError(
            "no VM groups (Group Memory(ID:NAME) with Memory Size MBytes) in the capture", source=cap.path
        )
    report += _not_used(cap)
    data = {
        "name": name or Path(cap.path).stem,
        "description": f"imported from esxtop batch {Path(cap.path).name} ({cap.host_name}), "
        f"{t.size} samples every {step:g} s",
        "duration": f"{float(t[-1]) + step:.0f}s",
        "tick": f"{min(2.0, step):g}s",
        "seed": 0,
        "host": {"memory": _mib(host_memory / MiB)},
        "vm": vms,
    }
    big_mb, big_name = max(sizes_mb)
    if round(big_mb) > round(host_memory / MiB):
        data["host"]["allow_overcommit"] = True  # as captured: the scenario says so on purpose
        report.append(f"{big_name} ({big_mb:.0f} MiB) is larger than the host: allow_overcommit = true")
    return data, report, observed


def _host_memory(cap: Capture, given: int | None, report: list[str]) -> int:
    """Host memory in bytes: ``--host-memory``, else the median of ``Memory\\Machine MBytes``."""
    if given is None:
        machine = cap.host.get(HOST_MEMORY)
        if machine is None or not np.isfinite(machine).any():
            raise UserError(
                f"no host memory column \\\\HOST\\Memory\\{HOST_MEMORY} (give --host-memory)", source=cap.path
            )
        given = int(round(float(np.nanmedian(machine)) * MiB))
        report.append(f"host {cap.host_name or '?'}: {given / MiB:.0f} MiB from Memory\\{HOST_MEMORY}")
    else:
        report.append(f"host memory {given / MiB:.0f} MiB from --host-memory")
    unused_host = sorted(set(cap.host) - {HOST_MEMORY})
    if unused_host:
        report.append(f"unused host counters: {', '.join(unused_host)}")
    return given


def _vm_size(gid: str, gname: str, counters: dict[str, np.ndarray], report: list[str]) -> float | None:
    """The VM's size (largest MEMSZ, MiB), or None for a resource pool or a group without MEMSZ."""
    memsz = counters.get("Memory Size MBytes")
    if gname in SYSTEM_GROUPS:
        report.append(f"skipped group {gid}:{gname}: an ESX resource pool, not a VM")
        return None
    if memsz is None:
        report.append(f"skipped group {gid}:{gname}: no Memory Size MBytes column")
        return None
    if not np.isfinite(memsz).any() or np.nanmax(memsz) <= 0:
        report.append(f"skipped group {gid}:{gname}: Memory Size MBytes is zero or empty")
        return None
    return float(np.nanmax(memsz))


def _working_set(
    gid: str, gname: str, counters: dict[str, np.ndarray], size_mb: float, report: list[str]
) -> np.ndarray | None:
    """The working set as a share of MEMSZ: TCHD / MEMSZ, else ACTV (``% Active Estimate``)."""
    touched = counters.get("Touched MBytes")
    if touched is not None:
        x = touched / size_mb
    elif "% Active Estimate" in counters:
        x = counters["% Active Estimate"] / 100.0
        report.append(f"{gname}: no Touched MBytes column; working set from % Active Estimate")
    else:
        report.append(f"skipped group {gid}:{gname}: neither Touched MBytes nor % Active Estimate")
        return None
    return np.clip(x, 0.0, 1.0)


def _workload(
    t: np.ndarray, x: np.ndarray, counters: dict[str, np.ndarray], size_mb: float, vm_name: str,
    report: list[str],
) -> dict[str, Any]:
    """The scenario's workload table: the fitted shape, ``allocated`` from GRANT (at least the peak
    working set), ``write_fraction`` from TCHD_W / TCHD."""
    fit = fit_workload(t, x)
    wl: dict[str, Any] = {"kind": fit.kind, "wss": _round(fit.wss)}
    if fit.kind == "diurnal":
        wl.update(period=f"{fit.period:.0f}s", amplitude=_round(fit.amplitude or 0.0))
    if fit.kind == "phased":
        wl["phases"] = [{"at": f"{at:.0f}s", "wss": _round(w)} for at, w in fit.phases]
    alloc, how = _allocated(fit, counters, size_mb)
    alloc = min(1.0, max(alloc, min(1.0, fit.peak()), wl["wss"]))        # at least the peak working set
    wl["allocated"] = _round(math.ceil(alloc * 1e4) / 1e4)
    touched = counters.get("Touched MBytes")
    tw = counters.get("Touched Write MBytes")
    if tw is not None and touched is not None and np.nansum(touched) > 0:
        wl["write_fraction"] = _round(min(1.0, float(np.nansum(tw) / np.nansum(touched))))
    report.append(
        f"{vm_name}: {size_mb:.0f} MiB, {fit.kind} wss {wl['wss']:.3f}"
        + (f" ({fit.note})" if fit.note else "")
        + f"; allocated {wl['allocated']:.3f} ({how})"
    )
    return wl


def _allocated(fit: Fit, counters: dict[str, np.ndarray], size_mb: float) -> tuple[float, str]:
    """Guest memory backed at least once, as a share of MEMSZ (largest GRANT), and where it came from."""
    granted = counters.get("Memory Granted Size MBytes")
    if granted is not None and np.isfinite(granted).any():
        return float(np.nanmax(granted)) / size_mb, "max Memory Granted Size MBytes"
    return 1.0, "no Memory Granted Size MBytes column: taken as all of MEMSZ"


def _observed(vm_name: str, counters: dict[str, np.ndarray]) -> str:
    """The observed means (consumed, target, swapped, ...) to compare a simulation with."""
    obs = [
        f"{c.replace(' MBytes', '')} {float(np.nanmean(counters[c])):.0f}"
        for c in OBSERVED
        if c in counters and np.isfinite(counters[c]).any()
    ]
    missing = [c for c in OBSERVED if c not in counters]
    return (
        f"{vm_name}: mean MiB: "
        + (", ".join(obs) if obs else "none")
        + (f" (missing: {', '.join(missing)})" if missing else "")
    )


def _not_used(cap: Capture) -> list[str]:
    """Report lines for what the scenario does not use: group counters, other objects, bad cells."""
    unused: Counter = Counter(c for counters in cap.groups.values() for c in counters
                              if c not in USED and c not in OBSERVED)
    lines = [f"unused Group Memory counter: {counter} ({n} groups)" for counter, n in sorted(unused.items())]
    lines += [f"ignored: {obj} ({n} columns)" for obj, n in sorted(cap.other_objects.items())]
    if cap.bad_values:
        lines.append(f"{cap.bad_values} empty or non-numeric values skipped")
    return lines


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
