"""Content shared by some VMs: ``[[content_group]]`` tables of a scenario.

A group is content that a subset of the VMs hold: an OS version, a patch level, an application,
a data set. Each VM whose name matches ``vms`` (patterns; default all) holds the group with
probability ``members`` (drawn once per run from the scenario's seed); a member holds ``share`` of
its configured memory as the group's pages, the same pages in every member. The rest of a VM's
memory follows its workload's ``content`` mix. A measured sharing-degree distribution (``memtune
profile`` over N processes: the share of pages whose content k of the N hold) becomes one group per
degree k >= 2 with ``members = k / N``. So shared and reclaimed memory grow with the number of VMs
as members accumulate, instead of jumping to their final share at two VMs.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import numpy as np

from memtune.core.names import name_problem
from memtune.errors import ConfigError

MAX_GROUPS = 4096          # group g uses template image id GROUP_IMAGE_BASE + g (13 bits of image id)
_KEYS = {"name", "share", "members", "vms"}


@dataclass(frozen=True)
class ContentGroup:
    name: str
    share: float                 # of a member's configured memory
    members: float = 1.0         # probability that a matching VM holds the group
    vms: tuple[str, ...] = ("*",)

    def matches(self, vm_name: str) -> bool:
        return any(fnmatch.fnmatchcase(vm_name, p) for p in self.vms)


def parse_content_groups(raw: Any, source: str) -> tuple[ContentGroup, ...]:
    """``[[content_group]]`` tables -> groups; one clear ConfigError naming the field otherwise."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("expected [[content_group]] tables", source=source, field="content_group")
    if len(raw) > MAX_GROUPS:
        raise ConfigError(f"at most {MAX_GROUPS} content groups", source=source, field="content_group")
    out = []
    seen: set[str] = set()
    for i, t in enumerate(raw):
        at = f"content_group[{i}]"
        if not isinstance(t, dict):
            raise ConfigError("expected a table", source=source, field=at)
        unknown = sorted(set(t) - _KEYS)
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})", source=source,
                              field=f"{at}.{unknown[0]}")
        name = t.get("name")
        if not isinstance(name, str) or (problem := name_problem(name)) is not None:
            raise ConfigError(problem if isinstance(name, str) else "expected a name", source=source,
                              field=f"{at}.name")
        if name in seen:
            raise ConfigError(f"duplicate content group {name!r}", source=source, field=f"{at}.name")
        seen.add(name)
        share = _fraction(t, "share", None, source, at, lo_open=True)
        members = _fraction(t, "members", 1.0, source, at, lo_open=True)
        vms = t.get("vms", ["*"])
        if isinstance(vms, str):
            vms = [vms]
        if not isinstance(vms, list) or not vms or not all(isinstance(p, str) and p for p in vms):
            raise ConfigError("expected a list of VM name patterns", source=source, field=f"{at}.vms")
        out.append(ContentGroup(name, share, members, tuple(vms)))
    return tuple(out)


def _fraction(t: dict, key: str, default: float | None, source: str, at: str, lo_open: bool) -> float:
    if key not in t:
        if default is None:
            raise ConfigError("required", source=source, field=f"{at}.{key}")
        return default
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or not 0 < v <= 1:
        raise ConfigError(f"expected a number in (0, 1], got {v!r}", source=source, field=f"{at}.{key}")
    return float(v)


def memberships(groups: tuple[ContentGroup, ...], vm_names: list[str], rng: np.random.Generator,
                source: str) -> np.ndarray:
    """Bool (VM, group): which VM holds which group. Draws one number per (group, VM) in order."""
    held = np.zeros((len(vm_names), len(groups)), dtype=bool)
    for g, grp in enumerate(groups):
        draw = rng.random(len(vm_names))
        held[:, g] = np.array([grp.matches(n) for n in vm_names]) & (draw < grp.members)
    over = held.astype(np.float64) @ np.array([g.share for g in groups])
    if (over > 1.0 + 1e-9).any():
        v = int(np.argmax(over))
        raise ConfigError(f"VM {vm_names[v]!r} holds content groups whose shares add up to {over[v]:.3g} (> 1)",
                          source=source, field="content_group")
    return held
