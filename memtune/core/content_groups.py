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

import numpy as np

from memtune.errors import ConfigError

MAX_GROUPS = 4096          # group g uses template image id GROUP_IMAGE_BASE + g (13 bits of image id)


@dataclass(frozen=True)
class ContentGroup:
    """One ``[[content_group]]`` table (validated by ``memtune.schema.scenario.ContentGroupSection``)."""

    name: str
    share: float                 # of a member's configured memory
    members: float = 1.0         # probability that a matching VM holds the group
    vms: tuple[str, ...] = ("*",)

    def matches(self, vm_name: str) -> bool:
        return any(fnmatch.fnmatchcase(vm_name, p) for p in self.vms)


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
        raise ConfigError(
            f"VM {vm_names[v]!r} holds content groups whose shares add up to {over[v]:.3g} (> 1)",
            source=source,
            field="content_group",
        )
    return held
