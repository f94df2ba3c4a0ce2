"""The policy file schema: top level (:class:`PolicyFile`), ``[defaults]`` and ``[[vm]]`` rules
(:class:`RuleSection`, :class:`VMRuleSection`).

Each per-VM knob may be written by its vSphere option name or its short name (``sched.mem.min`` or
``reservation``), never both. A new knob is a field pair here and an entry of ``KNOBS`` in
``memtune.policies.model``.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from memtune.schema.errors import FieldError
from memtune.schema.scenario import Section
from memtune.schema.types import SIZE_PATTERN, VM_MAX, Name, Shares, size_bytes
from memtune.units import format_size

SETTING_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$")
# knob field -> (vSphere option, short name)
KNOB_KEYS = {
    "reservation": ("sched.mem.min", "reservation"),
    "limit": ("sched.mem.max", "limit"),
    "shares": ("sched.mem.shares", "shares"),
    "salt": ("sched.mem.pshare.salt", "salt"),
    "maxmemctl": ("sched.mem.maxmemctl", "maxmemctl"),
}


class Pct(float):
    """A share of the VM's configured memory, in percent."""


def amount(value: Any, keywords: tuple[str, ...]) -> int | Pct | str:
    """A size with a unit, ``"25%"`` of configured memory, or one of ``keywords``."""
    if isinstance(value, str):
        text = value.strip()
        if text in keywords:
            return text
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                raise ValueError(f"expected a percentage such as '25%', got {value!r}") from None
            if not math.isfinite(pct) or not 0 <= pct <= 100:
                raise ValueError(f"percentage must be within 0..100, got {value!r}")
            return Pct(pct)
    try:
        return size_bytes(value, hi=VM_MAX)
    except ValueError as exc:
        extra = f" or {' / '.join(repr(k) for k in keywords)}" if keywords else ""
        raise ValueError(f"{exc}{extra}") from None


def _amount_type(keywords: tuple[str, ...], what: str) -> Any:
    return Annotated[Any, BeforeValidator(lambda v: amount(v, keywords)), WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": SIZE_PATTERN}, {"const": 0},
                   {"type": "string", "pattern": r"^\s*[0-9]*\.?[0-9]+\s*%\s*$"}, {"enum": list(keywords)}],
         "description": f"{what}: a size such as '4 GiB', a percentage of configured memory such as '25%', "
                        f"or {' / '.join(keywords)}"})]


Reservation = _amount_type(("active",), "sched.mem.min")
Limit = _amount_type(("unlimited",), "sched.mem.max")
MaxMemCtl = _amount_type(("unlimited",), "sched.mem.maxmemctl")


class RuleSection(Section):
    """``[defaults]``: knobs for every VM (lowest precedence)."""

    unknown_key: ClassVar[str] = "unknown per-VM knob"

    sched_mem_min: Reservation | None = Field(None, alias="sched.mem.min")
    reservation: Reservation | None = None
    sched_mem_max: Limit | None = Field(None, alias="sched.mem.max")
    limit: Limit | None = None
    sched_mem_shares: Shares | None = Field(None, alias="sched.mem.shares")
    shares: Shares | None = None
    sched_mem_pshare_salt: Name | None = Field(None, alias="sched.mem.pshare.salt")
    salt: Name | None = None
    sched_mem_maxmemctl: MaxMemCtl | None = Field(None, alias="sched.mem.maxmemctl")
    maxmemctl: MaxMemCtl | None = None

    def knobs(self, at: str) -> dict[str, tuple[str, Any]]:
        """Knob field -> (key it was given by, value); a knob given by both names is refused."""
        out: dict[str, tuple[str, Any]] = {}
        for f, (option, short) in KNOB_KEYS.items():
            long_value = getattr(self, option.replace(".", "_"))
            short_value = getattr(self, short)
            if long_value is not None and short_value is not None:
                raise FieldError(f"{at}.{short}", f"{option} given twice (once by its short name)")
            if long_value is not None:
                out[f] = (option, long_value)
            elif short_value is not None:
                out[f] = (short, short_value)
        res, lim = out.get("reservation"), out.get("limit")
        if res and lim and type(res[1]) is type(lim[1]) and not isinstance(res[1], str) and res[1] > lim[1]:
            shown = (f"{res[1]:g}%", f"{lim[1]:g}%") if isinstance(res[1], Pct) else \
                (format_size(res[1]), format_size(lim[1]))
            raise FieldError(
                f"{at}.{res[0]}", f"reservation ({shown[0]}) is larger than the limit ({shown[1]})"
            )
        return out


class _Named(Section):
    name: Name = Field(description="a VM name or an fnmatch pattern such as 'web-*'")


class VMRuleSection(RuleSection, _Named):
    """``[[vm]]``: knobs for the VMs ``name`` selects (an exact name or an fnmatch pattern); ``name``
    comes first (the bases' order), so a rule without one says so before anything else."""


class PolicyFile(Section):
    """A policy file: host settings by their real names plus per-VM rules (``docs/policies.md``)."""

    name: Name
    description: str = ""
    settings: dict[str, Any] = Field(
        default_factory=dict, description="host settings by their real names, e.g. Mem.IdleTax"
    )
    defaults: RuleSection = Field(default_factory=RuleSection)
    vm: list[VMRuleSection] = []

    @model_validator(mode="after")
    def _cross_fields(self) -> PolicyFile:
        for sname, value in self.settings.items():
            if not SETTING_NAME.match(sname):
                raise FieldError(
                    f"settings.{sname}",
                    "not a setting name (expected a dotted name such as Mem.IdleTax; quote it in TOML)",
                )
            if isinstance(value, dict | list):
                raise FieldError(f"settings.{sname}", f"expected a single value, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise FieldError(f"settings.{sname}", f"expected a finite number, got {value!r}")
        self.defaults.knobs("defaults")
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.vm):
            rule.knobs(f"vm[{i}]")
            if rule.name in seen:
                raise FieldError(f"vm[{i}].name", f"{rule.name!r} already has a rule (vm[{seen[rule.name]}])")
            seen[rule.name] = i
        return self
