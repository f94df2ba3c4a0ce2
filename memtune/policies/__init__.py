"""Policies: per-VM reservation / limit / shares / salt / max balloon and host settings, as TOML.

Public API (stable; the tuner and ``memtune simulate --policy`` build on it)::

    Policy, VMRule, Percent            the model (frozen dataclasses)
    policy_from_dict(data, source)     parse TOML data
    load_policy(ref)                   a preset by name or a TOML file by path
    Policy.to_toml()                   write it back (round-trips)
    validate_policy(policy, scenario)  raise ConfigError / AdmissionError naming the field
    apply_policy(policy, scenario)     the scenario with the policy applied
    list_presets()                     names of the built-in presets
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from memtune.errors import ConfigError
from memtune.inputs import read_text
from memtune.policies.apply import (
    ResolvedVM,
    active_set_bytes,
    apply_policy,
    check_policy_settings,
    default_registry,
    resolve_vms,
    validate_policy,
)
from memtune.policies.model import ACTIVE, UNLIMITED, Percent, Policy, VMRule, policy_from_dict

__all__ = [
    "ACTIVE", "UNLIMITED", "Percent", "Policy", "ResolvedVM", "VMRule", "active_set_bytes", "apply_policy",
    "check_policy_settings", "default_registry", "list_presets", "load_policy", "parse_policy_text",
    "policy_from_dict", "preset_text", "resolve_vms", "validate_policy",
]

PRESET_DIR = "presets"


def list_presets() -> list[str]:
    """Names of the built-in presets (``memtune/policies/presets/*.toml``)."""
    files = resources.files("memtune.policies").joinpath(PRESET_DIR)
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def preset_text(name: str) -> str:
    """The TOML text of a built-in preset."""
    return resources.files("memtune.policies").joinpath(PRESET_DIR, f"{name}.toml").read_text()


def parse_policy_text(text: str, source: str) -> Policy:
    """A Policy from TOML text; errors name ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None
    return policy_from_dict(data, source)


def load_policy(ref: str | Path) -> Policy:
    """A preset by name (``esxi-default``) or a policy TOML file by path."""
    if isinstance(ref, str) and ref in list_presets():
        return parse_policy_text(preset_text(ref), f"<preset {ref}>")
    path = Path(ref)
    if not path.exists():
        raise ConfigError(f"no such policy file, and not a preset (presets: {', '.join(list_presets())})",
                          source=str(ref))
    return parse_policy_text(read_text(path, "a policy file", error=ConfigError), str(path))
