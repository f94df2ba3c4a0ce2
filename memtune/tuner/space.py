"""The search space: host settings and per-VM-group knobs, from the core and from plugins.

Every dimension comes from a :class:`~memtune.core.knobs.Knob` registered through the
``memtune_register_knobs`` hook (the core registers ``Mem.IdleTax`` and the per-VM reservation,
limit and shares; plugins add theirs). Per-VM knobs are expanded once per *group* of VMs with the
same role, so the space stays small: by default VMs are grouped by their name without the ``-NN``
suffix (``web-01`` .. ``web-04`` -> ``web``). A dimension is named ``<setting>`` for host knobs and
``<group>.<field>`` for per-VM knobs (``web.reservation``).

A point of the space becomes an *assignment* (dimension name -> value, fixed knobs included),
which :func:`memtune.tuner.mapping.assignment_to_policy` turns into a :class:`memtune.policies.Policy`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memtune.core.knobs import Knob
from memtune.core.plugins import MemtunePluginManager
from memtune.core.registry import registry_of, settings_registry
from memtune.core.scenario import Scenario
from memtune.core.settings import SettingsRegistry
from memtune.errors import UserError
from memtune.units import parse_size

VM_FIELDS = ("reservation", "limit", "shares", "maxmemctl")
# per-VM fields given as a share of the VM's configured memory (shares: shares per MB)
FRACTION_FIELDS = ("reservation", "limit", "maxmemctl")
GROUP_MODES = ("prefix", "vm", "all")
# host settings that are only a default for a per-VM field: once every VM group has that field (a
# dimension or --fix), every VM carries its own value and the host setting changes nothing
# (`Mem.CtlMaxPercent` caps a balloon only for VMs without sched.mem.maxmemctl)
SHADOWED_BY_VM_FIELD = {"Mem.CtlMaxPercent": "maxmemctl"}
_SUFFIX = re.compile(r"^(.+?)-\d+$")


def group_vms(names: Sequence[str], mode: str = "prefix") -> dict[str, tuple[str, ...]]:
    """VM groups by role: ``prefix`` strips a ``-NN`` suffix, ``vm`` keeps one VM per group,
    ``all`` puts every VM in one group (named ``all``)."""
    if mode not in GROUP_MODES:
        raise UserError(f"expected one of {', '.join(GROUP_MODES)}, got {mode!r}", field="--group")
    groups: dict[str, list[str]] = {}
    for name in names:
        if mode == "all":
            key = "all"
        elif mode == "vm":
            key = name
        else:
            m = _SUFFIX.match(name)
            key = m.group(1) if m else name
        groups.setdefault(key, []).append(name)
    return {k: tuple(v) for k, v in groups.items()}


@dataclass(frozen=True)
class Dimension:
    """One axis of the space: a knob, and for per-VM knobs the group it sets."""

    name: str
    knob: Knob
    group: str | None = None

    @property
    def field(self) -> str:
        return self.knob.name

    def to_skopt(self) -> Any:
        from skopt.space import Categorical, Integer, Real

        k = self.knob
        if k.kind == "categorical":
            return Categorical(list(k.categories or ()), name=self.name)
        if k.kind == "int":
            return Integer(int(k.low), int(k.high), prior=k.prior, name=self.name)
        return Real(float(k.low), float(k.high), prior=k.prior, name=self.name)

    def native(self, value: Any) -> Any:
        """A plain Python value (skopt hands out numpy scalars)."""
        if hasattr(value, "item"):
            value = value.item()
        if self.knob.kind == "int":
            return int(value)
        if self.knob.kind == "real":
            return float(value)
        return value

    def describe(self) -> dict[str, Any]:
        k = self.knob
        out: dict[str, Any] = {"name": self.name, "kind": k.kind, "owner": k.owner, "target": k.target,
                               "help": k.help}
        if k.kind == "categorical":
            out["categories"] = list(k.categories or ())
        else:
            out.update(low=k.low, high=k.high, prior=k.prior)
        return out


def collect_knobs(pm: MemtunePluginManager, scenario: Scenario) -> list[Knob]:
    """Every knob the loaded plugins register for ``scenario`` (owner set to the plugin's name)."""
    return registry_of(pm).knobs(scenario)


def _check_knob(knob: Knob, registry: SettingsRegistry) -> None:
    where = f"knob {knob.name!r} of plugin {knob.owner!r}"
    if knob.target not in ("host", "vm"):
        raise UserError(f"{where}: target must be 'host' or 'vm', got {knob.target!r}")
    if knob.kind not in ("real", "int", "categorical"):
        raise UserError(f"{where}: kind must be real, int or categorical, got {knob.kind!r}")
    if knob.kind == "categorical":
        if not knob.categories:
            raise UserError(f"{where}: a categorical knob needs categories")
    elif knob.low is None or knob.high is None or not knob.low < knob.high:
        raise UserError(f"{where}: needs low < high, got {knob.low!r}..{knob.high!r}")
    if knob.target == "vm":
        if knob.name not in VM_FIELDS:
            raise UserError(f"{where}: per-VM knobs are {', '.join(VM_FIELDS)}")
        if knob.name in FRACTION_FIELDS and not (knob.low >= 0 and knob.high <= 1):
            raise UserError(f"{where}: {knob.name} is a share of configured memory (0..1)")
        if knob.name == "shares" and knob.low <= 0:
            raise UserError(f"{where}: shares per MB must be positive")
        return
    setting = registry.settings.get(knob.name)
    if setting is None:
        raise UserError(f"{where}: no loaded plugin declares a setting of that name")
    values = list(knob.categories) if knob.kind == "categorical" else [knob.low, knob.high]
    for v in values:
        try:
            setting.coerce(int(v) if knob.kind == "int" else v)
        except ValueError as exc:
            raise UserError(f"{where}: range outside the setting's: {exc}") from None


def parse_literal(text: str) -> Any:
    """``75`` -> 75, ``0.5`` -> 0.5, ``true`` -> True, anything else stays text."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t


@dataclass
class SearchSpace:
    """Dimensions, fixed values and VM groups for one scenario."""

    scenario: Scenario
    dimensions: list[Dimension]
    fixed: dict[str, Any]
    groups: dict[str, tuple[str, ...]]
    registry: SettingsRegistry
    all_dimensions: list[Dimension] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def blocks(self) -> list[list[int]]:
        """Indices of the dimensions grouped by what they act on: the knobs one plugin registers
        for the host, and those it registers for one VM group. Knobs of one block usually work
        together (TPS: salting, scan time and rate cap set one scan speed and scope; a group's
        reservation is a share of its limit), so the initial design and the local moves change
        them together. The core's host knobs (idle tax, minFree) are one block each."""
        out: dict[tuple[str, str | None], list[int]] = {}
        for i, d in enumerate(self.dimensions):
            core_host_knob = d.knob.owner == "core" and d.group is None
            key = (f"core:{d.name}", None) if core_host_knob else (d.knob.owner, d.group)
            out.setdefault(key, []).append(i)
        return list(out.values())

    def skopt_dimensions(self) -> list[Any]:
        return [d.to_skopt() for d in self.dimensions]

    def assignment(self, x: Sequence[Any]) -> dict[str, Any]:
        """Dimension name -> value for point ``x`` (in dimension order), fixed knobs included."""
        if len(x) != len(self.dimensions):
            raise ValueError(f"point has {len(x)} values, space has {len(self.dimensions)} dimensions")
        out = {d.name: d.native(v) for d, v in zip(self.dimensions, x, strict=True)}
        out.update(self.fixed)
        return out

    def point(self, assignment: Mapping[str, Any]) -> list[Any]:
        """The inverse of :meth:`assignment` (fixed knobs dropped)."""
        return [assignment[d.name] for d in self.dimensions]

    def signature(self) -> list[dict[str, Any]]:
        """What must match for a journal to be resumed with this space."""
        return [d.describe() for d in self.dimensions] + [
            {"fixed": dict(sorted(self.fixed.items()))},
            {"groups": {k: list(v) for k, v in self.groups.items()}},
        ]

    # --- applying a point ------------------------------------------------------------------------

    def relative_reservation(self, group: str) -> bool:
        """Whether ``<group>.reservation`` is a share of the group's limit rather than of configured
        memory: when both are dimensions, so that every point keeps reservation <= limit."""
        names = set(self.names)
        return f"{group}.reservation" in names and f"{group}.limit" in names

    def group_values(self, assignment: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Per group: field -> value, reservation / limit / maxmemctl as shares of configured memory
        (a relative reservation resolved), shares per MB."""
        out: dict[str, dict[str, Any]] = {}
        for key, value in assignment.items():
            if key in self.registry:
                continue
            group, _, fld = key.partition(".")
            if group in self.groups and fld in VM_FIELDS:
                out.setdefault(group, {})[fld] = value
        for group, vals in out.items():
            if "reservation" in vals and self.relative_reservation(group):
                vals["reservation"] = float(vals["reservation"]) * float(vals["limit"])
        return out


def build_space(
    scenario: Scenario,
    pm: MemtunePluginManager,
    *,
    group: str = "prefix",
    knobs: Iterable[str] = (),
    fix: Iterable[str] = (),
) -> SearchSpace:
    """The search space for ``scenario``: every registered knob, per-VM ones once per VM group;
    only those matching ``knobs`` (fnmatch patterns on dimension or field names) when given; each
    ``fix`` (``NAME=VALUE``) pins a dimension, a per-VM field of every group or any host setting."""
    registry = settings_registry(pm)
    groups = group_vms([v.name for v in scenario.vms], group)
    all_dims = _expand(collect_knobs(pm, scenario), registry, scenario, groups)
    dims = _select(all_dims, knobs)
    fixed: dict[str, Any] = {}
    for item in fix:
        pinned = _apply_fix(item, all_dims, registry, scenario, groups, fixed)
        dims = [d for d in dims if d not in pinned]
    dims = [d for d in dims if not _shadowed(d, dims, fixed, groups)]
    if not dims:
        raise UserError("nothing left to tune: every knob is fixed or filtered out", field="--knobs")
    return SearchSpace(scenario, dims, fixed, groups, registry, all_dims)


def _expand(
    raw: Iterable[Knob], registry: SettingsRegistry, scenario: Scenario, groups: Mapping[str, tuple[str, ...]]
) -> list[Dimension]:
    """One dimension per host knob, one per per-VM knob and VM group (checked; maxmemctl only
    when some VM has a balloon driver; a knob registered twice is an error)."""
    seen: dict[str, Knob] = {}
    dims: list[Dimension] = []
    for knob in raw:
        _check_knob(knob, registry)
        if (
            knob.target == "vm"
            and knob.name == "maxmemctl"
            and not any(v.balloon_driver for v in scenario.vms)
        ):
            continue
        key = f"{knob.target}:{knob.name}"
        if key in seen:
            raise UserError(f"knob {knob.name!r} registered by both {seen[key].owner!r} and {knob.owner!r}")
        seen[key] = knob
        if knob.target == "host":
            dims.append(Dimension(knob.name, knob))
        else:
            dims.extend(Dimension(f"{g}.{knob.name}", knob, g) for g in groups)
    return dims


def _select(dims: list[Dimension], knobs: Iterable[str]) -> list[Dimension]:
    """The dimensions matching the ``--knobs`` patterns (all of them when none is given)."""
    patterns = [p.strip() for item in knobs for p in item.split(",") if p.strip()]
    if not patterns:
        return list(dims)
    keep: list[Dimension] = []
    for p in patterns:
        hit = [
            d
            for d in dims
            if fnmatch.fnmatchcase(d.name, p) or (d.group is not None and fnmatch.fnmatchcase(d.field, p))
        ]
        if not hit:
            raise UserError(
                f"{p!r} matches no knob (knobs: {', '.join(d.name for d in dims)})", field="--knobs"
            )
        keep.extend(d for d in hit if d not in keep)
    return [d for d in dims if d in keep]


def _apply_fix(
    item: str,
    all_dims: list[Dimension],
    registry: SettingsRegistry,
    scenario: Scenario,
    groups: Mapping[str, tuple[str, ...]],
    fixed: dict[str, Any],
) -> list[Dimension]:
    """Record one ``--fix NAME=VALUE`` in ``fixed``; returns the dimensions it pins."""
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep or not name or not text.strip():
        raise UserError(f"expected NAME=VALUE, got {item!r}", field="--fix")
    value = parse_literal(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{name}: expected a finite number, got {text!r}", field="--fix")
    targets = [d for d in all_dims if d.name == name or (d.group is not None and d.field == name)]
    for d in targets:
        members = set(groups.get(d.group or "", ()))
        sizes = {vm.memory for vm in scenario.vms if vm.name in members}
        fixed[d.name] = _fixed_value(d, text, sizes)
        if d.group is None and name in registry:  # the setting's declared range holds when fixed too
            try:
                registry.settings[name].coerce(fixed[d.name])
            except ValueError as exc:
                raise UserError(f"{name}: {exc}", field="--fix") from None
    if targets:
        return targets
    if name not in registry:
        raise UserError(
            f"{name!r} is neither a knob nor a host setting (knobs: {', '.join(d.name for d in all_dims)})",
            field="--fix",
        )
    try:
        fixed[name] = registry.settings[name].coerce(parse_literal(text))
    except ValueError as exc:
        raise UserError(f"{name}: {exc}", field="--fix") from None
    return []


def _shadowed(
    d: Dimension, dims: list[Dimension], fixed: Mapping[str, Any], groups: Mapping[str, tuple[str, ...]]
) -> bool:
    """Whether host dimension ``d`` is a default every VM group overrides (a dead dimension: the
    model would spend points learning that it does nothing)."""
    fld = SHADOWED_BY_VM_FIELD.get(d.name) if d.group is None else None
    if fld is None:
        return False
    names = {x.name for x in dims} | set(fixed)
    return all(f"{g}.{fld}" in names for g in groups)


def _fixed_value(d: Dimension, text: str, sizes: set[int]) -> Any:
    """The value ``--fix`` gives dimension ``d``; ``sizes`` are the configured sizes of its group."""
    k = d.knob
    value = parse_literal(text)
    if k.target == "host":
        if k.kind == "categorical":
            if value not in (k.categories or ()):
                raise UserError(
                    f"{d.name}: expected one of {', '.join(map(str, k.categories or ()))}, got {text!r}",
                    field="--fix",
                )
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{d.name}: expected a number, got {text!r}", field="--fix")
        return d.native(value)
    if d.field in FRACTION_FIELDS:
        if isinstance(value, str):
            try:
                b = parse_size(value)
            except ValueError as exc:
                raise UserError(f"{d.name}: {exc} (or a fraction 0..1)", field="--fix") from None
            if len(sizes) != 1:
                raise UserError(
                    f"{d.name}: VMs of the group differ in size; give a fraction 0..1", field="--fix"
                )
            value = b / next(iter(sizes))
        if isinstance(value, bool) or not 0 <= float(value) <= 1:
            raise UserError(
                f"{d.name}: expected a fraction 0..1 of configured memory or a size, got {text!r}",
                field="--fix",
            )
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UserError(f"{d.name}: expected a positive number of shares per MB, got {text!r}", field="--fix")
    return int(value) if float(value).is_integer() else float(value)
