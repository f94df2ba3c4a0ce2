"""Exporters: a policy as what an administrator pastes into a real system.

Formats: ``vmx`` (lines per VM), ``esxcli`` (host advanced options), ``powercli`` (host options,
VM resource configuration, VM advanced options), ``libvirt`` (``<memtune>`` per domain) and
``cgroup`` (cgroup v2 ``memory.min`` / ``memory.low`` / ``memory.max``). Per-VM output needs a
scenario: rules by pattern, percentages and ``"active"`` resolve against its VMs. The mapping of each
knob, and what has no equivalent, is documented in ``docs/policies.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from memtune.core.memstate import min_free
from memtune.core.scenario import Scenario
from memtune.core.settings import SettingsRegistry
from memtune.core.vm import shares_value
from memtune.errors import UserError
from memtune.policies.apply import ResolvedVM, check_policy_settings, min_free_pct, resolve_vms
from memtune.policies.model import Policy
from memtune.units import KiB, MiB, format_size

FORMATS = ("vmx", "esxcli", "powercli", "libvirt", "cgroup")

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
                notes.append(f"{name} = {policy.settings[name]!r}: configure a {format_size(value)} host cache "
                             "on a local SSD datastore (vSphere Client: Host Cache Configuration), then "
                             "`esxcli sched swap system set --hostcache-enabled true`")
            else:
                notes.append(f"{name} = 0: no host swap cache "
                             "(`esxcli sched swap system set --hostcache-enabled false`)")
            continue
        if not name.startswith("Mem."):
            notes.append(f"{name} = {policy.settings[name]!r}: model setting, no ESXi option")
            continue
        v = esxi_option_value(name, setting.kind, value)
        if v is None:
            notes.append(f"{name} = {policy.settings[name]!r}: no known ESXi unit for this value, not exported")
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

def _header(policy: Policy, scenario: Scenario | None, comment: str) -> list[str]:
    where = f" for scenario {scenario.name}" if scenario is not None else ""
    return [f"{comment} memtune policy {policy.name}{where} (generated by `memtune policy export`)"]


def export_vmx(policy: Policy, scenario: Scenario, vms: list[ResolvedVM], registry: SettingsRegistry) -> str:
    lines = _header(policy, scenario, "#")
    lines.append("# Per-VM options in MB (MiB), as vSphere writes them; edit with the VM powered off.")
    for v in vms:
        lines.append("")
        lines.append(f"# {v.name}.vmx")
        lines.append(f'sched.mem.min = "{_mb(v.reservation)}"')
        if v.limit is None or v.limit >= v.memory:
            lines.append(f"# sched.mem.max: unlimited (remove the line; memsize {_mb(v.memory)} MB caps it)")
        else:
            lines.append(f'sched.mem.max = "{_mb(v.limit)}"')
        lines.append(f'sched.mem.shares = "{v.shares}"')
        if v.salt is not None:
            lines.append(f'sched.mem.pshare.salt = "{_vmx_escape(v.salt)}"')
        if v.maxmemctl is not None:
            lines.append(f'sched.mem.maxmemctl = "{_mb(v.maxmemctl)}"')
    return "\n".join(lines) + "\n"


def _vmx_escape(text: str) -> str:
    return text.replace("|", "|7C").replace('"', "|22")


def export_esxcli(policy: Policy, scenario: Scenario | None, vms: list[ResolvedVM] | None,
                  registry: SettingsRegistry) -> str:
    options, notes = host_options(policy, registry)
    lines = _header(policy, scenario, "#")
    for name, value in options:
        flag = "-s" if isinstance(value, str) else "-i"
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        lines.append(f"esxcli system settings advanced set -o /{name.replace('.', '/')} {flag} {shown}")
    lines += [f"# {n}" for n in notes]
    if vms is not None:
        lines.append("# per-VM options (sched.mem.*) are not host options: see --format vmx or powercli")
    return "\n".join(lines) + "\n"


def _ps(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export_powercli(policy: Policy, scenario: Scenario | None, vms: list[ResolvedVM] | None,
                    registry: SettingsRegistry) -> str:
    options, notes = host_options(policy, registry)
    lines = _header(policy, scenario, "#")
    for name, value in options:
        shown = _ps(value) if isinstance(value, str) else str(value)
        lines.append(f"Get-VMHost | Get-AdvancedSetting -Name {_ps(name)} | "
                     f"Set-AdvancedSetting -Value {shown} -Confirm:$false")
    lines += [f"# {n}" for n in notes]
    for v in vms or []:
        level = v.shares.capitalize() if isinstance(v.shares, str) else "Custom"
        args = [f"-MemReservationGB {_gb(v.reservation)}",
                "-MemLimitGB $null" if v.limit is None or v.limit >= v.memory else f"-MemLimitGB {_gb(v.limit)}",
                f"-MemSharesLevel {level}"]
        if level == "Custom":
            args.append(f"-NumMemShares {int(v.shares)}")
        lines.append(f"Get-VM -Name {_ps(v.name)} | Get-VMResourceConfiguration | "
                     f"Set-VMResourceConfiguration {' '.join(args)}")
        extra = []
        if v.salt is not None:
            extra.append(("sched.mem.pshare.salt", _ps(v.salt)))
        if v.maxmemctl is not None:
            extra.append(("sched.mem.maxmemctl", _ps(str(_mb(v.maxmemctl)))))
        for opt, val in extra:
            lines.append(f"New-AdvancedSetting -Entity (Get-VM -Name {_ps(v.name)}) -Name {_ps(opt)} "
                         f"-Value {val} -Force -Confirm:$false")
    return "\n".join(lines) + "\n"


def export_libvirt(policy: Policy, scenario: Scenario, vms: list[ResolvedVM], registry: SettingsRegistry) -> str:
    ent = entitlements(vms, scenario.host.memory, min_free_pct(policy, scenario))
    lines = [f"<!-- memtune policy {escape(policy.name)} for scenario {escape(scenario.name)}: "
             "one <memtune> per domain (virsh edit NAME). KiB; hard and soft limit include the "
             "VM's overhead; min_guarantee is honoured by the ESX driver only. -->"]
    for v, e in zip(vms, ent, strict=True):
        lines.append(f"<!-- domain {escape(v.name).replace('--', '- -')} -->")
        lines.append("<memtune>")
        if v.limit is not None and v.limit < v.memory:
            lines.append(f"  <hard_limit unit='KiB'>{_kib(v.limit + v.overhead)}</hard_limit>")
        lines.append(f"  <soft_limit unit='KiB'>{_kib(e + v.overhead)}</soft_limit>")
        lines.append(f"  <min_guarantee unit='KiB'>{_kib(v.reservation)}</min_guarantee>")
        lines.append("</memtune>")
    return "\n".join(lines) + "\n"


def export_cgroup(policy: Policy, scenario: Scenario, vms: list[ResolvedVM], registry: SettingsRegistry) -> str:
    ent = entitlements(vms, scenario.host.memory, min_free_pct(policy, scenario))
    lines = _header(policy, scenario, "#")
    lines.append("# cgroup v2 memory controller, bytes (max = no limit), each including the VM's overhead.")
    lines.append("# CGROUP_ROOT: the parent of the VMs' cgroups, e.g. /sys/fs/cgroup/machine.slice")
    for v, e in zip(vms, ent, strict=True):
        cg = f'"${{CGROUP_ROOT}}/{v.name}'
        high = "max" if v.limit is None or v.limit >= v.memory else str(_kib(v.limit + v.overhead) * KiB)
        lines.append(f"# {v.name}")
        lines.append(f'echo {_kib(v.reservation + v.overhead) * KiB} > {cg}/memory.min"')
        lines.append(f'echo {_kib(e + v.overhead) * KiB} > {cg}/memory.low"')
        lines.append(f'echo {high} > {cg}/memory.max"')
    return "\n".join(lines) + "\n"


_EXPORTERS: dict[str, tuple[Callable[..., str], bool]] = {
    # format -> (function, needs a scenario)
    "vmx": (export_vmx, True),
    "esxcli": (export_esxcli, False),
    "powercli": (export_powercli, False),
    "libvirt": (export_libvirt, True),
    "cgroup": (export_cgroup, True),
}


def has_vm_knobs(policy: Policy) -> bool:
    return bool(policy.defaults.given()) or bool(policy.vms)


def export_policy(policy: Policy, fmt: str, scenario: Scenario | None = None, *,
                  registry: SettingsRegistry | None = None) -> str:
    """``policy`` in format ``fmt`` (resolved against ``scenario`` for per-VM output)."""
    from memtune.policies.apply import default_registry

    if fmt not in _EXPORTERS:
        raise UserError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})", field="--format")
    func, needs = _EXPORTERS[fmt]
    reg = registry if registry is not None else default_registry(scenario)
    check_policy_settings(policy, reg, scenario)
    if scenario is None:
        if needs or (fmt == "powercli" and has_vm_knobs(policy)):
            raise UserError(f"format {fmt} writes per-VM values: give --scenario to resolve the policy's "
                            "rules (names, patterns, percentages, 'active') into VMs", field="--scenario")
        return func(policy, None, None, reg)
    vms = resolve_vms(policy, scenario)
    return func(policy, scenario, vms, reg)


__all__ = ["FORMATS", "entitlements", "esxi_option_value", "export_policy", "host_options"]
