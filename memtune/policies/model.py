"""The policy model: per-VM rules and host settings, read from and written to TOML.

A policy is data, never code. Per-VM knobs carry the names of the vSphere options they set
(``sched.mem.min`` reservation, ``sched.mem.max`` limit, ``sched.mem.shares``,
``sched.mem.pshare.salt``, ``sched.mem.maxmemctl``); host knobs are host settings by their real
names (``Mem.IdleTax``, ``Mem.ShareForceSalting`` ...), the same namespace as a scenario's
``[settings]`` table. See ``docs/policies.md`` for the file format and the precedence of rules.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import tomli_w

from memtune.errors import ConfigError
from memtune.schema.errors import FieldError, validate
from memtune.schema.policy import Pct, PolicyFile, RuleSection
from memtune.units import GiB, KiB, MiB, TiB

ACTIVE = "active"          # reservation keyword: the VM's peak working set, resolved at apply time
UNLIMITED = "unlimited"    # limit / maxmemctl keyword: no per-VM cap

_PATTERN_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True, order=True)
class Percent:
    """A share of the VM's configured memory, in percent (``"25%"``), resolved per VM."""

    value: float

    def of(self, configured: int) -> int:
        """Bytes: ``value`` percent of ``configured``, rounded to the nearest byte."""
        return int(round(configured * self.value / 100.0))

    def __str__(self) -> str:
        text = repr(float(self.value))
        if text.endswith(".0"):
            text = text[:-2]
        return f"{text}%"


Amount = int | Percent | str   # bytes, a share of configured memory, or a keyword


@dataclass(frozen=True)
class VMRule:
    """Per-VM knobs for the VMs ``name`` selects (an exact name or an fnmatch pattern).

    ``None`` means "not given by this rule": a rule of lower precedence or the scenario decides.
    """

    name: str
    reservation: Amount | None = None      # sched.mem.min: bytes, Percent or "active"
    limit: Amount | None = None            # sched.mem.max: bytes, Percent or "unlimited"
    shares: str | int | None = None        # sched.mem.shares: low / normal / high or a number
    salt: str | None = None                # sched.mem.pshare.salt
    maxmemctl: Amount | None = None        # sched.mem.maxmemctl: bytes, Percent or "unlimited"

    @property
    def is_pattern(self) -> bool:
        return bool(_PATTERN_CHARS.search(self.name))

    def matches(self, vm_name: str) -> bool:
        return fnmatch.fnmatchcase(vm_name, self.name) if self.is_pattern else vm_name == self.name

    def given(self) -> dict[str, Any]:
        """The knobs this rule sets, by field name."""
        return {f: getattr(self, f) for f in KNOB_FIELDS if getattr(self, f) is not None}


# field name -> (option name written to files, accepted aliases)
KNOBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "reservation": ("sched.mem.min", ("reservation",)),
    "limit": ("sched.mem.max", ("limit",)),
    "shares": ("sched.mem.shares", ("shares",)),
    "salt": ("sched.mem.pshare.salt", ("salt",)),
    "maxmemctl": ("sched.mem.maxmemctl", ("maxmemctl",)),
}
KNOB_FIELDS = tuple(KNOBS)
_KEY_TO_FIELD = {key: f for f, (opt, aliases) in KNOBS.items() for key in (opt, *aliases)}


@dataclass(frozen=True)
class Policy:
    """A memory-management policy: host settings plus per-VM rules.

    ``defaults`` applies to every VM (lowest precedence); ``vms`` are rules by exact name or
    pattern. For each knob of a VM the value comes from the most specific rule that gives it: an
    exact name beats any pattern; of two patterns the longer one wins, and of two equally long ones
    the later one. Knobs no rule gives keep the scenario's value; settings the policy does not give
    keep the scenario's value, else the setting's default.
    """

    name: str
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    defaults: VMRule = field(default_factory=lambda: VMRule("*"))
    vms: tuple[VMRule, ...] = ()
    source: str = field(default="<policy>", compare=False)

    def rules_for(self, vm_name: str) -> list[VMRule]:
        """Rules that select ``vm_name``, lowest precedence first."""
        pats = [(len(r.name), i, r) for i, r in enumerate(self.vms) if r.is_pattern and r.matches(vm_name)]
        pats.sort(key=lambda t: (t[0], t[1]))
        exact = [r for r in self.vms if not r.is_pattern and r.name == vm_name]
        return [self.defaults, *(r for _, _, r in pats), *exact]

    def knobs_for(self, vm_name: str) -> dict[str, Any]:
        """The merged knobs for one VM (field name -> value as written in the policy)."""
        out: dict[str, Any] = {}
        for rule in self.rules_for(vm_name):
            out.update(rule.given())
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain TOML-ready data; ``policy_from_dict(p.to_dict(), ...) == p``."""
        data: dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        if self.settings:
            data["settings"] = dict(self.settings)
        d = _rule_table(self.defaults)
        if d:
            data["defaults"] = d
        if self.vms:
            data["vm"] = [{"name": r.name, **_rule_table(r)} for r in self.vms]
        return data

    def to_toml(self) -> str:
        """The policy as TOML text (sizes with exact binary units, percentages as ``"25%"``),
        one ``[[vm]]`` table per rule in precedence order."""
        data = self.to_dict()
        rules = data.pop("vm", [])
        text = tomli_w.dumps(data)
        for rule in rules:
            text += "\n[[vm]]\n" + tomli_w.dumps(rule)
        return text


# --- writing -----------------------------------------------------------------------------------

def format_size_exact(n: int) -> int | str:
    """``"4 GiB"`` when ``n`` is a whole number of a binary unit, else ``"N bytes"`` (sizes carry a
    unit); ``0`` as is."""
    if n > 0:
        for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
            if n % size == 0:
                return f"{n // size} {unit}"
        return f"{n} bytes"
    return n


def _amount_out(v: Amount) -> int | str:
    if isinstance(v, Percent):
        return str(v)
    if isinstance(v, str):
        return v
    return format_size_exact(v)


def _rule_table(rule: VMRule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, value in rule.given().items():
        key = KNOBS[f][0]
        out[key] = value if f in ("shares", "salt") else _amount_out(value)
    return out


# --- reading -----------------------------------------------------------------------------------
# Form, types, ranges and cross-field rules are the schema in memtune.schema.policy.


def _rule(sec: RuleSection, name: str, at: str) -> VMRule:
    values: dict[str, Any] = {}
    for f, (_key, value) in sec.knobs(at).items():
        values[f] = Percent(float(value)) if isinstance(value, Pct) else value
    return VMRule(name=name, **values)


def policy_from_dict(data: Mapping[str, Any], source: str, *, registry: Any = None) -> Policy:
    """Build a Policy from parsed TOML; every error names ``source`` and the field.

    With ``registry`` (a :class:`~memtune.core.settings.SettingsRegistry`), host settings are
    checked against it too (names and values); without, only their form is checked here and
    :func:`memtune.policies.validate_policy` checks them against the loaded plugins.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("expected a table", source=source)
    model = validate(PolicyFile, dict(data), source)
    if registry is not None:
        check_settings(model.settings, registry, source=source)
    try:
        defaults = _rule(model.defaults, "*", "defaults")
        rules = tuple(_rule(r, r.name, f"vm[{i}]") for i, r in enumerate(model.vm))
    except FieldError as exc:
        raise ConfigError(exc.message, source=source, field=exc.path) from None
    return Policy(name=model.name, description=model.description, settings=dict(model.settings),
                  defaults=defaults, vms=rules, source=source)


def check_settings(settings: Mapping[str, Any], registry: Any, *, source: str,
                   disabled: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each host setting must be declared by a loaded plugin and its value valid; returns the
    values in base units. Raises ConfigError naming ``settings.<name>``."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        setting = registry.settings.get(name)
        if setting is None:
            hint = f"; plugins disabled: {', '.join(disabled)}" if disabled else ""
            raise ConfigError(
                f"unknown host setting: no loaded plugin declares it (see `memtune plugins`){hint}",
                source=source,
                field=f"settings.{name}",
            )
        try:
            out[name] = setting.coerce(value)
        except ValueError as exc:
            raise ConfigError(str(exc), source=source, field=f"settings.{name}") from None
    return out


def rule_fields() -> tuple[str, ...]:
    """Names of the per-VM fields of :class:`VMRule` (besides ``name``)."""
    return tuple(f.name for f in fields(VMRule) if f.name != "name")
