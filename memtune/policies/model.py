"""The policy model: per-VM rules and host settings, read from and written to TOML.

A policy is data, never code. Per-VM knobs carry the names of the vSphere options they set
(``sched.mem.min`` reservation, ``sched.mem.max`` limit, ``sched.mem.shares``,
``sched.mem.pshare.salt``, ``sched.mem.maxmemctl``); host knobs are host settings by their real
names (``Mem.IdleTax``, ``Mem.ShareForceSalting`` ...), the same namespace as a scenario's
``[settings]`` table. See ``docs/policies.md`` for the file format and the precedence of rules.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import tomli_w

from memtune.core.names import name_problem
from memtune.core.vm import SHARES_PER_MB
from memtune.errors import ConfigError
from memtune.units import GiB, KiB, MiB, TiB, parse_size

ACTIVE = "active"          # reservation keyword: the VM's peak working set, resolved at apply time
UNLIMITED = "unlimited"    # limit / maxmemctl keyword: no per-VM cap

_PATTERN_CHARS = re.compile(r"[*?\[]")
_SETTING_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$")


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
    """``"4 GiB"`` when ``n`` is a whole number of a binary unit, else plain bytes."""
    if n > 0:
        for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
            if n % size == 0:
                return f"{n // size} {unit}"
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

_TOP_KEYS = {"name", "description", "settings", "defaults", "vm"}


def _fail(source: str, fld: str, msg: str) -> ConfigError:
    return ConfigError(msg, source=source, field=fld)


def parse_amount(value: Any, *, source: str, fld: str, keywords: tuple[str, ...]) -> Amount:
    """Bytes (``"4 GiB"``, ``"512 MiB"``, plain bytes), a percentage of configured memory
    (``"25%"``) or one of ``keywords``."""
    if isinstance(value, str):
        text = value.strip()
        if text in keywords:
            return text
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                raise _fail(source, fld, f"expected a percentage such as '25%', got {value!r}") from None
            if not math.isfinite(pct) or not 0 <= pct <= 100:
                raise _fail(source, fld, f"percentage must be within 0..100, got {value!r}")
            return Percent(pct)
    elif isinstance(value, float) and not value.is_integer():
        raise _fail(source, fld, f"expected a size such as '4 GiB' or whole bytes, got {value!r}")
    try:
        return parse_size(value)
    except ValueError as exc:
        extra = f" or {' / '.join(repr(k) for k in keywords)}" if keywords else ""
        raise _fail(source, fld, f"{exc}{extra}") from None


def parse_shares(value: Any, *, source: str, fld: str) -> str | int:
    """``low`` / ``normal`` / ``high`` (5/10/20 shares per MB) or a positive whole number."""
    if isinstance(value, str) and value in SHARES_PER_MB:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise _fail(source, fld, f"expected low, normal, high or a positive whole number, got {value!r}")


def _parse_rule(data: Any, *, source: str, table: str, name: str | None) -> VMRule:
    if not isinstance(data, dict):
        raise _fail(source, table, "expected a table")
    allowed = set(_KEY_TO_FIELD) | ({"name"} if name is None else set())
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, value in data.items():
        fld = f"{table}.{key}"
        if key not in allowed:
            known = ", ".join(opt for opt, _ in KNOBS.values())
            raise _fail(source, fld, f"unknown per-VM knob (known: {known}; or their short names)")
        if key == "name":
            continue
        f = _KEY_TO_FIELD[key]
        if f in values:
            raise _fail(source, fld, f"{KNOBS[f][0]} given twice (once by its short name)")
        keys[f] = key
        if f == "reservation":
            values[f] = parse_amount(value, source=source, fld=fld, keywords=(ACTIVE,))
        elif f in ("limit", "maxmemctl"):
            values[f] = parse_amount(value, source=source, fld=fld, keywords=(UNLIMITED,))
        elif f == "shares":
            values[f] = parse_shares(value, source=source, fld=fld)
        else:
            if (problem := name_problem(value)) is not None:
                raise _fail(source, fld, problem)
            values[f] = value
    if name is None:
        raw = data.get("name")
        if not isinstance(raw, str) or not raw:
            raise _fail(source, f"{table}.name", "missing VM name or pattern (name = \"web-*\")")
        if (problem := name_problem(raw)) is not None:
            raise _fail(source, f"{table}.name", problem)
        name = raw
    res, lim = values.get("reservation"), values.get("limit")
    if isinstance(res, int) and isinstance(lim, int) and res > lim:
        raise _fail(source, f"{table}.{keys['reservation']}",
                    f"reservation ({format_size_exact(res)}) is larger than the limit ({format_size_exact(lim)})")
    if isinstance(res, Percent) and isinstance(lim, Percent) and res.value > lim.value:
        raise _fail(source, f"{table}.{keys['reservation']}",
                    f"reservation ({res}) is larger than the limit ({lim})")
    return VMRule(name=name, **values)


def policy_from_dict(data: Mapping[str, Any], source: str, *, registry: Any = None) -> Policy:
    """Build a Policy from parsed TOML; every error names ``source`` and the field.

    With ``registry`` (a :class:`~memtune.core.settings.SettingsRegistry`), host settings are
    checked against it too (names and values); without, only their form is checked here and
    :func:`memtune.policies.validate_policy` checks them against the loaded plugins.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("expected a table", source=source)
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(source, key, f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    name = data.get("name", "")
    if not isinstance(name, str) or not name:
        raise _fail(source, "name", "missing policy name (name = \"my-policy\")")
    if (problem := name_problem(name)) is not None:
        raise _fail(source, "name", problem)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail(source, "description", f"expected text, got {description!r}")
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise _fail(source, "settings", "expected a table of host settings by name")
    for sname, value in settings.items():
        if not _SETTING_NAME.match(sname):
            raise _fail(source, f"settings.{sname}",
                        "not a setting name (expected a dotted name such as Mem.IdleTax; quote it in TOML)")
        if isinstance(value, dict | list):
            raise _fail(source, f"settings.{sname}", f"expected a single value, got {value!r}")
    if registry is not None:
        check_settings(settings, registry, source=source)
    defaults = _parse_rule(data.get("defaults", {}), source=source, table="defaults", name="*")
    raw_vms = data.get("vm", [])
    if not isinstance(raw_vms, list):
        raise _fail(source, "vm", "expected an array of [[vm]] tables")
    rules: list[VMRule] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw_vms):
        rule = _parse_rule(item, source=source, table=f"vm[{i}]", name=None)
        if rule.name in seen:
            raise _fail(source, f"vm[{i}].name", f"{rule.name!r} already has a rule (vm[{seen[rule.name]}])")
        seen[rule.name] = i
        rules.append(rule)
    return Policy(name=name, description=description, settings=dict(settings), defaults=defaults,
                  vms=tuple(rules), source=source)


def check_settings(settings: Mapping[str, Any], registry: Any, *, source: str,
                   disabled: tuple[str, ...] = ()) -> dict[str, Any]:
    """Each host setting must be declared by a loaded plugin and its value valid; returns the
    values in base units. Raises ConfigError naming ``settings.<name>``."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        setting = registry.settings.get(name)
        if setting is None:
            hint = f"; plugins disabled: {', '.join(disabled)}" if disabled else ""
            raise _fail(source, f"settings.{name}",
                        f"unknown host setting: no loaded plugin declares it (see `memtune plugins`){hint}")
        try:
            out[name] = setting.coerce(value)
        except ValueError as exc:
            raise _fail(source, f"settings.{name}", str(exc)) from None
    return out


def rule_fields() -> tuple[str, ...]:
    """Names of the per-VM fields of :class:`VMRule` (besides ``name``)."""
    return tuple(f.name for f in fields(VMRule) if f.name != "name")
