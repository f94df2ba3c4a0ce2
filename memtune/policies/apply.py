"""Resolving a policy against a scenario: per-VM values, validation, admission control.

``apply_policy(policy, scenario)`` returns the scenario with every VM's reservation, limit,
shares, salt and max balloon set as the policy says, and the policy's host settings laid over the
scenario's. It raises :class:`~memtune.errors.ConfigError` / :class:`~memtune.errors.AdmissionError`
with one line naming the policy field at fault.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.core.builtin import SETTINGS as CORE_SETTINGS
from memtune.core.host import admission_control
from memtune.core.memstate import min_free
from memtune.core.plugins import build_plugin_manager
from memtune.core.registry import settings_registry
from memtune.core.scenario import Scenario
from memtune.core.settings import SettingsRegistry
from memtune.core.vm import VMSpec
from memtune.errors import AdmissionError, ConfigError
from memtune.policies.model import ACTIVE, KNOBS, UNLIMITED, Percent, Policy, VMRule, check_settings
from memtune.units import MiB, format_size


def active_set_bytes(vm: VMSpec) -> int:
    """The VM's peak steady-state working set, rounded up to whole MiB (vSphere sets reservations
    in MB): ``wss`` for constant, leak and boot-storm workloads (the boot burst is not reserved),
    the largest phase ``wss`` for phased ones, ``wss * (1 + amplitude)`` for diurnal ones; never
    more than configured memory."""
    wl = vm.workload
    frac = wl.wss
    if wl.kind == "phased":
        frac = max([wl.wss, *(p.wss for p in wl.phases if p.wss is not None)])
    elif wl.kind == "diurnal":
        frac = wl.wss * (1.0 + wl.amplitude)
    raw = min(frac, 1.0) * vm.memory
    return min(vm.memory, int(math.ceil(raw / MiB)) * MiB)


@dataclass(frozen=True)
class ResolvedVM:
    """One VM's knobs after the policy was applied, in bytes (``None`` limit = configured)."""

    name: str
    memory: int
    reservation: int
    limit: int | None
    shares: str | int
    salt: str | None
    maxmemctl: int | None
    overhead: int
    origin: dict[str, str]          # knob -> policy field that set it ("" = the scenario's value)

    @property
    def effective_limit(self) -> int:
        return self.memory if self.limit is None else min(self.limit, self.memory)


def _rule_field(policy: Policy, rule: VMRule, knob: str) -> str:
    table = "defaults" if rule is policy.defaults else f"vm[{policy.vms.index(rule)}]"
    return f"{table}.{KNOBS[knob][0]}"


def default_registry(scenario: Scenario | None = None) -> SettingsRegistry:
    """Settings declared by the default plugins (minus those the scenario disables)."""
    disable = scenario.disable if scenario is not None else ()
    return settings_registry(build_plugin_manager(disable=disable))


def check_policy_settings(policy: Policy, registry: SettingsRegistry | None = None,
                          scenario: Scenario | None = None) -> dict[str, Any]:
    """The policy's host settings in base units; unknown names or bad values raise ConfigError."""
    reg = registry if registry is not None else default_registry(scenario)
    disabled = scenario.disable if scenario is not None else ()
    return check_settings(policy.settings, reg, source=policy.source, disabled=disabled)


def resolve_vms(policy: Policy, scenario: Scenario) -> list[ResolvedVM]:
    """Every VM's knobs under ``policy``, checked (names, limit, reservation) and admitted.

    ``reservation = "active"`` reserves each VM's :func:`active_set_bytes` (at most its limit).
    If those reservations do not fit the host (admission control), all of them are scaled down by
    one factor, in whole MiB, so that the reservations the policy fixes and every VM's overhead
    still fit. Fixed reservations are never scaled: if they do not fit, AdmissionError.
    """
    _check_rules_match(policy, scenario)
    resolved = [_resolve_vm(policy, vm) for vm in scenario.vms]
    out = [r for r, _ in resolved]
    active = np.array([is_active for _, is_active in resolved], dtype=bool)
    pct = min_free_pct(policy, scenario)
    out = _fit_active(out, active, scenario.host.memory, pct)
    _admit(out, policy, scenario, pct)
    return out


def _check_rules_match(policy: Policy, scenario: Scenario) -> None:
    """Every ``[[vm]]`` rule of the policy names or matches a VM of the scenario."""
    names = [vm.name for vm in scenario.vms]
    for i, rule in enumerate(policy.vms):
        if not any(rule.matches(n) for n in names):
            what = "pattern matches no VM" if rule.is_pattern else "no VM of that name"
            raise ConfigError(f"{what} {rule.name!r} in scenario {scenario.name!r}", source=policy.source,
                              field=f"vm[{i}].name")


def _resolve_vm(policy: Policy, vm: VMSpec) -> tuple[ResolvedVM, bool]:
    """One VM's knobs: the rules that match it in order (a later rule wins), checked against its
    configured memory and limit; and whether its reservation is ``"active"`` (still to fit)."""
    src = policy.source
    given: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for rule in policy.rules_for(vm.name):
        for knob, value in rule.given().items():
            given[knob] = value
            origin[knob] = _rule_field(policy, rule, knob)
    limit = _amount(given["limit"], vm) if "limit" in given else vm.limit
    if limit is not None and limit > vm.memory:
        raise ConfigError(f"limit {format_size(limit)} is larger than {vm.name}'s configured memory "
                          f"{format_size(vm.memory)}", source=src, field=origin["limit"])
    eff_limit = vm.memory if limit is None else limit
    is_active = given.get("reservation") == ACTIVE
    if is_active:
        reservation = min(active_set_bytes(vm), eff_limit)
    elif "reservation" in given:
        reservation = _amount(given["reservation"], vm) or 0
    else:
        reservation = vm.reservation
    if reservation > vm.memory:
        raise ConfigError(f"reservation {format_size(reservation)} is larger than {vm.name}'s configured "
                          f"memory {format_size(vm.memory)}", source=src, field=origin["reservation"])
    if reservation > eff_limit:
        fld = origin.get("reservation") or origin.get("limit", "")
        raise ConfigError(f"reservation {format_size(reservation)} of {vm.name} is larger than its limit "
                          f"{format_size(eff_limit)}", source=src, field=fld)
    maxmemctl = _amount(given["maxmemctl"], vm) if "maxmemctl" in given else vm.maxmemctl
    return ResolvedVM(
        name=vm.name, memory=vm.memory, reservation=reservation, limit=limit,
        shares=given.get("shares", vm.shares), salt=given.get("salt", vm.salt), maxmemctl=maxmemctl,
        overhead=vm.overhead, origin=origin), is_active


def _amount(value: Any, vm: VMSpec) -> int | None:
    """A size knob in bytes: a percentage of the VM's configured memory, a size, or None for
    ``"unlimited"``."""
    if isinstance(value, Percent):
        return value.of(vm.memory)
    if value == UNLIMITED:
        return None
    return int(value)


MIN_FREE = next(s for s in CORE_SETTINGS if s.name == "Mem.MemMinFreePct")


def min_free_pct(policy: Policy, scenario: Scenario) -> float:
    """``Mem.MemMinFreePct`` in force: the policy's, else the scenario's, else 0 (sliding scale)."""
    raw = policy.settings.get(MIN_FREE.name, scenario.settings.get(MIN_FREE.name, MIN_FREE.default))
    try:
        return float(MIN_FREE.coerce(raw))
    except ValueError as exc:
        raise ConfigError(str(exc), source=policy.source, field=f"settings.{MIN_FREE.name}") from None


def _fit_active(vms: list[ResolvedVM], active: np.ndarray, memory: int, pct: float) -> list[ResolvedVM]:
    if not active.any():
        return vms
    res = np.array([v.reservation for v in vms], dtype=np.float64)
    over = np.array([v.overhead for v in vms], dtype=np.float64)
    admitted, _ = admission_control(memory, res + over, pct)
    if admitted.all():
        return vms
    room = memory - min_free(memory, pct) - over.sum() - res[~active].sum()
    want = res[active].sum()
    factor = max(0.0, room / want) if want > 0 else 0.0
    scaled = np.floor(res[active] * factor / MiB) * MiB
    new = list(vms)
    for j, i in enumerate(np.flatnonzero(active)):
        new[i] = dataclasses.replace(vms[i], reservation=int(scaled[j]))
    return new


def _admit(vms: list[ResolvedVM], policy: Policy, scenario: Scenario, pct: float) -> None:
    needs = np.array([v.reservation + v.overhead for v in vms], dtype=np.float64)
    admitted, left = admission_control(scenario.host.memory, needs, pct)
    if admitted.all():
        return
    i = int(np.flatnonzero(~admitted)[0])
    v = vms[i]
    msg = (
        f"admission control: VM {v.name!r} needs {needs[i] / MiB:.0f} MiB reserved (reservation + overhead) "
        f"but only {left[i] / MiB:.0f} MiB of the host is unreserved "
        f"(reservations + overhead of all VMs: {needs.sum() / MiB:.0f} MiB)"
    )
    fld = v.origin.get("reservation")
    if fld:
        raise AdmissionError(msg, source=policy.source, field=fld)
    raise AdmissionError(msg, source=scenario.source, field=f"vm.{v.name}.reservation")


def _scenario_with(policy: Policy, scenario: Scenario, vms: list[ResolvedVM]) -> Scenario:
    specs = tuple(
        dataclasses.replace(
            spec,
            reservation=r.reservation,
            limit=r.limit,
            shares=r.shares,
            salt=r.salt,
            maxmemctl=r.maxmemctl,
        )
        for spec, r in zip(scenario.vms, vms, strict=True)
    )
    settings = {**scenario.settings, **policy.settings}
    desc = (
        f"{scenario.description} [policy {policy.name}]"
        if scenario.description
        else f"[policy {policy.name}]"
    )
    return scenario.replace(vms=specs, settings=settings, description=desc)


def validate_policy(
    policy: Policy, scenario: Scenario | None = None, *, registry: SettingsRegistry | None = None
) -> Scenario | None:
    """Check ``policy`` (against ``scenario`` when given); raise ConfigError / AdmissionError with
    one line naming the field. Returns the scenario with the policy applied (None without one)."""
    check_policy_settings(policy, registry, scenario)
    if scenario is None:
        return None
    return _scenario_with(policy, scenario, resolve_vms(policy, scenario))


def apply_policy(policy: Policy, scenario: Scenario, *, registry: SettingsRegistry | None = None) -> Scenario:
    """``scenario`` with ``policy`` applied (validated first; see :func:`validate_policy`)."""
    result = validate_policy(policy, scenario, registry=registry)
    assert result is not None
    return result
