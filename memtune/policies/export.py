"""Exporters: a policy as what an administrator pastes into a real system.

Formats: ``vmx`` (lines per VM), ``esxcli`` (host advanced options), ``powercli`` (host options,
VM resource configuration, VM advanced options), ``libvirt`` (``<memtune>`` per domain) and
``cgroup`` (cgroup v2 ``memory.min`` / ``memory.low`` / ``memory.max``); ``ksm-sysfs`` and ``ksmtuned``
(Linux KSM knobs, in ``export_ksm``). Per-VM output needs a
scenario: rules by pattern, percentages and ``"active"`` resolve against its VMs. The mapping of each
knob, and what has no equivalent, is documented in ``docs/policies.md``.
"""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np

from memtune.core.memstate import min_free
from memtune.core.names import name_problem, one_line
from memtune.core.scenario import Scenario
from memtune.core.settings import SettingsRegistry
from memtune.core.vm import shares_value
from memtune.errors import UserError
from memtune.policies.apply import ResolvedVM, check_policy_settings, min_free_pct, resolve_vms
from memtune.policies.export_ksm import export_ksm_sysfs, export_ksmtuned
from memtune.policies.model import Policy
from memtune.units import KiB, MiB, format_size

FORMATS = ("vmx", "esxcli", "powercli", "libvirt", "cgroup", "ksm-sysfs", "ksmtuned")

# ESXi advanced options whose unit differs from memtune's base unit (seconds / bytes):
# option -> seconds (or bytes) per unit of the ESXi value.
ESXI_UNITS: dict[str, float] = {
    "Mem.ShareScanTime": 60.0,      # minutes (vSphere Resource Management, advanced memory attributes)
    "Mem.SamplePeriod": 1.0,        # seconds
    "Mem.BalancePeriod": 1.0,       # seconds
}


def _mb(n: int) -> int:
    """MiB, as vSphere writes memory sizes ("MB"), rounded to the nearest MiB."""
    return int(round(n / MiB))


def _kib(n: float) -> int:
    """KiB, rounded up (a libvirt / cgroup limit must not cut below the model's value)."""
    return int(-(-int(np.ceil(n)) // KiB))


def _gb(n: int) -> str:
    """GiB as an exact decimal of whole MiB, as PowerCLI's ``-Mem*GB`` parameters take it."""
    return format((Decimal(_mb(n)) / Decimal(1024)).normalize(), "f")


def esxi_option_value(name: str, kind: str, value: Any) -> int | str | None:
    """The value to give ESXi for a memtune setting in base units, or None if it cannot be said."""
    if kind == "bool":
        return int(bool(value))
    if kind in ("int", "percent"):
        return int(value)
    if kind == "str":
        return str(value)
    if kind in ("seconds", "bytes"):
        unit = ESXI_UNITS.get(name)
        if unit is None:
            return None
        v = value / unit
        return int(v) if float(v).is_integer() else None
    if kind == "float":
        return int(value) if float(value).is_integer() else None
    return None


def host_options(policy: Policy, registry: SettingsRegistry) -> tuple[list[tuple[str, int | str]], list[str]]:
    """(ESXi advanced options as (name, value), notes on settings that are not ESXi options)."""
    values = check_policy_settings(policy, registry)
    options: list[tuple[str, int | str]] = []
    notes: list[str] = []
    for name, value in values.items():
        setting = registry.settings[name]
        if name == "memtune.swap_host_cache":
            if value:
                notes.append(
                    f"{name} = {policy.settings[name]!r}: configure a {format_size(value)} host cache "
                    "on a local SSD datastore (vSphere Client: Host Cache Configuration), then "
                    "`esxcli sched swap system set --hostcache-enabled true`"
                )
            else:
                notes.append(
                    f"{name} = 0: no host swap cache "
                    "(`esxcli sched swap system set --hostcache-enabled false`)"
                )
            continue
        if not name.startswith("Mem."):
            notes.append(f"{name} = {policy.settings[name]!r}: model setting, no ESXi option")
            continue
        v = esxi_option_value(name, setting.kind, value)
        if v is None:
            notes.append(
                f"{name} = {policy.settings[name]!r}: no known ESXi unit for this value, not exported"
            )
            continue
        options.append((name, v))
    return options, notes


def entitlements(vms: list[ResolvedVM], memory: int, min_free_pct: float = 0.0) -> np.ndarray:
    """Bytes each VM gets under full contention when every VM is fully active: the host's memory
    (minus minFree and all overhead) split in proportion to shares, each VM clamped between its
    reservation and its limit (water-filling). With no contention, every VM gets its limit."""
    n = len(vms)
    lo = np.array([v.reservation for v in vms], dtype=np.float64)
    hi = np.array([v.effective_limit for v in vms], dtype=np.float64)
    shares = np.array([shares_value(v.shares, v.memory) for v in vms], dtype=np.float64)
    avail = memory - min_free(memory, min_free_pct) - sum(v.overhead for v in vms)
    if hi.sum() <= avail:
        return hi
    out = lo.copy()
    free = np.ones(n, dtype=bool)
    for _ in range(n + 1):
        left = avail - out[~free].sum()
        if not free.any():
            break
        share = left * shares[free] / shares[free].sum()
        cand = np.clip(share, lo[free], hi[free])
        idx = np.flatnonzero(free)
        pinned = cand != share
        out[idx] = cand
        if not pinned.any():
            break
        free[idx[pinned]] = False
    return np.floor(out)


# --- formats -------------------------------------------------------------------------------------
# Every exporter escapes what it writes for its own syntax; names with control characters never get
# this far (refused when the scenario or policy is read), and `_check_names` refuses them again here.


def _check_names(policy: Policy, scenario: Scenario | None, vms: list[ResolvedVM] | None) -> None:
    if (problem := name_problem(policy.name)) is not None:
        raise UserError(problem, source=policy.source, field="name")
    if scenario is not None and (problem := name_problem(scenario.name)) is not None:
        raise UserError(problem, source=scenario.source, field="name")
    for v in vms or []:
        if (problem := name_problem(v.name)) is not None:
            raise UserError(f"VM {v.name!r}: {problem}", source=scenario.source if scenario else None)
        if v.salt is not None and (problem := name_problem(v.salt)) is not None:
            raise UserError(f"VM {v.name!r}: salt: {problem}", source=policy.source)


def _header(policy: Policy, scenario: Scenario | None, comment: str) -> list[str]:
    where = f" for scenario {scenario.name}" if scenario is not None else ""
    return [
        f"{comment} "
        + one_line(f"memtune policy {policy.name}{where} (generated by `memtune policy export`)")
    ]


def vmx_quote(text: str) -> str:
    """A .vmx value in double quotes: ``"``, ``|``, ``#`` and control characters as
    ``|XX`` (hex of the byte), the escape VMware's .vmx/.vmdk config files use."""
    out = []
    for ch in text:
        if ch in '"|#' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"|{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def export_vmx(policy: Policy, scenario: Scenario, vms: list[ResolvedVM], registry: SettingsRegistry) -> str:
    lines = _header(policy, scenario, "#")
    lines.append("# Per-VM options in MB (MiB), as vSphere writes them; edit with the VM powered off.")
    for v in vms:
        lines.append("")
        lines.append(f"# {one_line(v.name)}.vmx")
        lines.append(f"sched.mem.min = {vmx_quote(str(_mb(v.reservation)))}")
        if v.limit is None or v.limit >= v.memory:
            lines.append(f"# sched.mem.max: unlimited (remove the line; memsize {_mb(v.memory)} MB caps it)")
        else:
            lines.append(f"sched.mem.max = {vmx_quote(str(_mb(v.limit)))}")
        lines.append(f"sched.mem.shares = {vmx_quote(str(v.shares))}")
        if v.salt is not None:
            lines.append(f"sched.mem.pshare.salt = {vmx_quote(v.salt)}")
        if v.maxmemctl is not None:
            lines.append(f"sched.mem.maxmemctl = {vmx_quote(str(_mb(v.maxmemctl)))}")
    return "\n".join(lines) + "\n"


def export_esxcli(
    policy: Policy, scenario: Scenario | None, vms: list[ResolvedVM] | None, registry: SettingsRegistry
) -> str:
    options, notes = host_options(policy, registry)
    lines = _header(policy, scenario, "#")
    for name, value in options:
        flag = "-s" if isinstance(value, str) else "-i"
        option = shlex.quote("/" + name.replace(".", "/"))
        lines.append(f"esxcli system settings advanced set -o {option} {flag} {shlex.quote(str(value))}")
    lines += [f"# {one_line(n)}" for n in notes]
    if vms is not None:
        lines.append("# per-VM options (sched.mem.*) are not host options: see --format vmx or powercli")
    return "\n".join(lines) + "\n"


# PowerShell reads U+2018..U+201B as single quotes too; inside a single-quoted string each is escaped
# by doubling it (System.Management.Automation.Language.CodeGeneration.EscapeSingleQuotedStringContent).
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
# Wildcard characters of PowerShell's -Name parameters (about_Wildcards); backtick is their escape.
_PS_WILDCARDS = "*?[]`"


def ps_quote(text: str) -> str:
    """A PowerShell single-quoted string literal: no variable or subexpression expansion."""
    return "'" + "".join(ch + ch if ch in PS_SINGLE_QUOTES else ch for ch in text) + "'"


def _ps_vm(name: str) -> str:
    """A PowerCLI pipeline start selecting exactly the VM ``name`` (never a wildcard match)."""
    if any(ch in _PS_WILDCARDS for ch in name):
        return f"Get-VM | Where-Object Name -eq {ps_quote(name)}"
    return f"Get-VM -Name {ps_quote(name)}"


def export_powercli(
    policy: Policy, scenario: Scenario | None, vms: list[ResolvedVM] | None, registry: SettingsRegistry
) -> str:
    options, notes = host_options(policy, registry)
    lines = _header(policy, scenario, "#")
    for name, value in options:
        shown = ps_quote(value) if isinstance(value, str) else str(value)
        lines.append(
            f"Get-VMHost | Get-AdvancedSetting -Name {ps_quote(name)} | "
            f"Set-AdvancedSetting -Value {shown} -Confirm:$false"
        )
    lines += [f"# {one_line(n)}" for n in notes]
    for v in vms or []:
        level = v.shares.capitalize() if isinstance(v.shares, str) else "Custom"
        args = [
            f"-MemReservationGB {_gb(v.reservation)}",
            "-MemLimitGB $null" if v.limit is None or v.limit >= v.memory else f"-MemLimitGB {_gb(v.limit)}",
            f"-MemSharesLevel {level}",
        ]
        if level == "Custom":
            args.append(f"-NumMemShares {int(v.shares)}")
        lines.append(
            f"{_ps_vm(v.name)} | Get-VMResourceConfiguration | Set-VMResourceConfiguration {' '.join(args)}"
        )
        extra = []
        if v.salt is not None:
            extra.append(("sched.mem.pshare.salt", ps_quote(v.salt)))
        if v.maxmemctl is not None:
            extra.append(("sched.mem.maxmemctl", ps_quote(str(_mb(v.maxmemctl)))))
        for opt, val in extra:
            lines.append(
                f"New-AdvancedSetting -Entity ({_ps_vm(v.name)}) -Name {ps_quote(opt)} "
                f"-Value {val} -Force -Confirm:$false"
            )
    return "\n".join(lines) + "\n"


def export_libvirt(
    policy: Policy, scenario: Scenario, vms: list[ResolvedVM], registry: SettingsRegistry
) -> str:
    """One ``<domain>`` per VM with its ``<name>`` and ``<memtune>`` (the elements of libvirt's domain
    XML), under a root naming the policy and scenario; built with ElementTree, so names are escaped."""
    ent = entitlements(vms, scenario.host.memory, min_free_pct(policy, scenario))
    root = ET.Element("memtune-policy", {"policy": policy.name, "scenario": scenario.name})
    root.append(
        ET.Comment(
            " one <memtune> per domain (virsh edit NAME). KiB; hard and soft limit include "
            "the VM's overhead; min_guarantee is honoured by the ESX driver only. "
        )
    )
    for v, e in zip(vms, ent, strict=True):
        dom = ET.SubElement(root, "domain")
        ET.SubElement(dom, "name").text = v.name
        tune = ET.SubElement(dom, "memtune")
        if v.limit is not None and v.limit < v.memory:
            ET.SubElement(tune, "hard_limit", unit="KiB").text = str(_kib(v.limit + v.overhead))
        ET.SubElement(tune, "soft_limit", unit="KiB").text = str(_kib(e + v.overhead))
        ET.SubElement(tune, "min_guarantee", unit="KiB").text = str(_kib(v.reservation))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


CGROUP_ROOT_DEFAULT = "/sys/fs/cgroup/machine.slice"


def _cgroup_dir(v: ResolvedVM, scenario: Scenario) -> str:
    """The VM's cgroup directory name; one a path could escape from is refused."""
    if "/" in v.name or v.name in (".", "..") or len(v.name.encode()) > 255:
        raise UserError(
            f"VM {v.name!r}: not usable as a cgroup directory name ('/', '.', '..' or over 255 "
            "bytes); rename the VM or use another format",
            source=scenario.source,
        )
    return v.name


def export_cgroup(
    policy: Policy, scenario: Scenario, vms: list[ResolvedVM], registry: SettingsRegistry
) -> str:
    ent = entitlements(vms, scenario.host.memory, min_free_pct(policy, scenario))
    lines = ["#!/bin/sh", *_header(policy, scenario, "#")]
    lines.append("# cgroup v2 memory controller, bytes (max = no limit), each including the VM's overhead.")
    lines.append("# CGROUP_ROOT: the parent of the VMs' cgroups (environment; default below).")
    lines.append("set -eu")
    lines.append(f'CGROUP_ROOT="${{CGROUP_ROOT:-{CGROUP_ROOT_DEFAULT}}}"')
    for v, e in zip(vms, ent, strict=True):
        cg = f'"$CGROUP_ROOT"/{shlex.quote(_cgroup_dir(v, scenario))}'
        high = "max" if v.limit is None or v.limit >= v.memory else str(_kib(v.limit + v.overhead) * KiB)
        lines.append(f"# {one_line(v.name)}")
        lines.append(f"echo {_kib(v.reservation + v.overhead) * KiB} > {cg}/memory.min")
        lines.append(f"echo {_kib(e + v.overhead) * KiB} > {cg}/memory.low")
        lines.append(f"echo {high} > {cg}/memory.max")
    return "\n".join(lines) + "\n"


_EXPORTERS: dict[str, tuple[Callable[..., str], bool]] = {
    # format -> (function, needs a scenario)
    "vmx": (export_vmx, True),
    "esxcli": (export_esxcli, False),
    "powercli": (export_powercli, False),
    "libvirt": (export_libvirt, True),
    "cgroup": (export_cgroup, True),
    "ksm-sysfs": (export_ksm_sysfs, False),
    "ksmtuned": (export_ksmtuned, False),
}


def has_vm_knobs(policy: Policy) -> bool:
    return bool(policy.defaults.given()) or bool(policy.vms)


def export_policy(
    policy: Policy, fmt: str, scenario: Scenario | None = None, *, registry: SettingsRegistry | None = None
) -> str:
    """``policy`` in format ``fmt`` (resolved against ``scenario`` for per-VM output)."""
    from memtune.policies.apply import default_registry

    if fmt not in _EXPORTERS:
        raise UserError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})", field="--format")
    func, needs = _EXPORTERS[fmt]
    reg = registry if registry is not None else default_registry(scenario)
    check_policy_settings(policy, reg, scenario)
    if scenario is None:
        if needs or (fmt == "powercli" and has_vm_knobs(policy)):
            raise UserError(
                f"format {fmt} writes per-VM values: give --scenario to resolve the policy's "
                "rules (names, patterns, percentages, 'active') into VMs",
                field="--scenario",
            )
        _check_names(policy, None, None)
        return func(policy, None, None, reg)
    vms = resolve_vms(policy, scenario)
    _check_names(policy, scenario, vms)
    return func(policy, scenario, vms, reg)


__all__ = [
    "FORMATS",
    "entitlements",
    "esxi_option_value",
    "export_policy",
    "host_options",
    "ps_quote",
    "vmx_quote",
]
