"""The space's two mappings: a point to the policy it stands for, and a policy to its point.

``assignment_to_policy`` (point -> policy) writes host settings and one rule per VM group;
``admits`` checks a point against validation and admission control without simulating;
``policy_point`` (policy -> point) reads a preset applied to the scenario back into the space's
dimensions, so the initial design can start from the shipped presets. Both honour the same
conventions (see :mod:`memtune.tuner.space`): reservation, limit and maxmemctl as shares of
configured memory, a reservation relative to the limit when both are dimensions, shares per MB.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import numpy as np

from memtune.core.scenario import Scenario
from memtune.core.vm import VMSpec
from memtune.errors import UserError
from memtune.policies import Percent, Policy, VMRule, apply_policy, list_presets, load_policy
from memtune.tuner.config import BASELINE
from memtune.tuner.space import FRACTION_FIELDS, Dimension, SearchSpace


def assignment_to_policy(space: SearchSpace, assignment: dict[str, Any], name: str,
                         description: str = "") -> Policy:
    """The policy a point stands for: host settings, and one rule per VM group (a ``<group>-*``
    pattern when it selects exactly the group's VMs, else one rule per VM)."""
    settings = {k: v for k, v in assignment.items() if k in space.registry}
    per_group = space.group_values(assignment)
    mem = {vm.name: vm.memory for vm in space.scenario.vms}
    all_names = list(mem)
    rules: list[VMRule] = []
    for group, members in space.groups.items():
        knobs = per_group.get(group)
        if not knobs:
            continue
        pattern = f"{group}-*"
        use_pattern = (len(members) > 1 and len({mem[m] for m in members}) == 1
                       and sorted(fnmatch.filter(all_names, pattern)) == sorted(members))
        targets = [pattern] if use_pattern else list(members)
        for target in targets:
            values: dict[str, Any] = {}
            for fld, v in knobs.items():
                if fld in FRACTION_FIELDS:
                    values[fld] = Percent(round(float(v) * 100, 2))
                elif fld == "shares":
                    mb = max(1, mem[members[0] if use_pattern else target] // 2**20)
                    values[fld] = max(1, int(round(float(v) * mb)))
            rules.append(VMRule(target, **values))
    return Policy(name=name, description=description, settings=settings, vms=tuple(rules),
                  source=f"<tuner point {name}>")


def policy_scenario(space: SearchSpace, scenario: Scenario, assignment: dict[str, Any],
                    name: str) -> tuple[Policy, Scenario | None, str | None]:
    """The policy of ``assignment``, ``scenario`` with it applied (None when validation or
    admission control refuses it) and the reason it was refused."""
    policy = assignment_to_policy(space, assignment, name)
    try:
        return policy, apply_policy(policy, scenario, registry=space.registry), None
    except UserError as exc:
        return policy, None, exc.message


def admits(space: Any, scenario: Scenario) -> Callable[[list[Any]], bool]:
    """Whether a point passes validation and admission control on ``scenario`` (no simulation;
    a function of its own, so the proposer holds no reference back to the tuner)."""
    def ok(x: list[Any]) -> bool:
        native = [space.dimensions[i].native(v) for i, v in enumerate(x)]
        return policy_scenario(space, scenario, space.assignment(native), "candidate")[1] is not None
    return ok


def _vm_share(space: SearchSpace, d: Dimension, vm: VMSpec, settings: dict[str, Any]) -> float:
    """The value VM ``vm`` has for per-VM dimension ``d``, in the space's units."""
    if d.field == "reservation":
        if space.relative_reservation(d.group or ""):
            return vm.reservation / max(vm.effective_limit, 1)
        return vm.reservation / vm.memory
    if d.field == "limit":
        return vm.effective_limit / vm.memory
    if d.field == "shares":
        return vm.shares_number / max(1, vm.memory // 2**20)
    cap = (
        vm.maxmemctl if vm.maxmemctl is not None else vm.memory * settings.get("Mem.CtlMaxPercent", 100) / 100
    )
    return min(cap, vm.memory) / vm.memory


def policy_point(space: SearchSpace, scenario: Scenario, name: str) -> list[Any] | None:
    """Policy ``name`` (a preset) as a point of the space, each dimension clipped to its knob's
    range (a group's value is the mean over its VMs); None when ``scenario`` cannot admit it or a
    categorical value is outside the knob's categories."""
    try:
        sc = apply_policy(load_policy(name), scenario, registry=space.registry)
    except (UserError, FileNotFoundError):
        return None
    settings = space.registry.resolve(sc.settings, source=sc.source)
    by_name = {vm.name: vm for vm in sc.vms}
    x: list[Any] = []
    for d in space.dimensions:
        k = d.knob
        if d.group is None:
            v: Any = settings[d.name]
        else:
            v = float(np.mean([_vm_share(space, d, by_name[n], settings) for n in space.groups[d.group]]))
        if k.kind == "categorical":
            if v not in (k.categories or ()):
                return None
            v = next(c for c in (k.categories or ()) if c == v)
        else:
            v = min(max(v, k.low), k.high)
            v = int(round(v)) if k.kind == "int" else float(v)
        x.append(v)
    return x


def preset_points(space: SearchSpace, scenario: Scenario) -> list[list[Any]]:
    """The shipped presets other than ``esxi-default`` as points of the space (settings the space
    has no dimension for are dropped), in preset order, without duplicates of each other or of the
    baseline; presets the scenario cannot admit or the space cannot express are left out."""
    seen = [policy_point(space, scenario, BASELINE)]
    out: list[list[Any]] = []
    for name in list_presets():
        if name == BASELINE:
            continue
        x = policy_point(space, scenario, name)
        if x is not None and x not in seen:
            seen.append(x)
            out.append(x)
    return out
