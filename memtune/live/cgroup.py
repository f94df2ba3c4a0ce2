"""Memory cgroups for the VMs: a parent whose limit is the (scaled) host memory, one child per VM.

On this kernel the memory controller is bound to cgroup v1 (``/sys/fs/cgroup/memory``): limits are
``memory.limit_in_bytes``, and a reservation can only be approximated by
``memory.soft_limit_in_bytes`` (v1 has no ``memory.min``; the soft limit steers reclaim under
global memory pressure only, not under the parent's limit). PSI comes from a cgroup2 group per VM
under ``/sys/fs/cgroup/unified`` (``memory.pressure`` works there without the memory controller).
A worker joins both. See Documentation/admin-guide/cgroup-v1/memory.rst and cgroup-v2.rst.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from memtune.live.state import HostError, HostState

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup/unified")
PARENT = "memtune-live"
UNLIMITED = -1


def available() -> str | None:
    """None if memory cgroups can be used here, else the reason."""
    if not (V1_ROOT / "memory.limit_in_bytes").exists():
        return f"no cgroup v1 memory controller at {V1_ROOT}"
    return None


def psi_available() -> bool:
    return (V2_ROOT / "cgroup.procs").exists() and (V2_ROOT / "memory.pressure").exists()


def _mkdir(st: HostState, path: Path) -> None:
    if path.exists():
        raise HostError(f"{path} exists: another memtune run, or a left-over (`memtune live cleanup`)",
                        source=str(path))
    st.record("cgroup", path=str(path))
    path.mkdir()


def read_pressure(path: Path) -> dict[str, float]:
    """``some``/``full`` stall totals in seconds from a PSI file (empty if unavailable)."""
    out: dict[str, float] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        kind, *fields = line.split()
        total = dict(f.split("=") for f in fields)["total"]
        out[kind] = int(total) / 1e6
    return out


def read_stat(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in (path / "memory.stat").read_text().splitlines())}


@dataclass
class Group:
    """One memory cgroup (v1) with its cgroup2 twin for PSI (``v2`` None when unavailable)."""

    v1: Path
    v2: Path | None

    def set_limit(self, st: HostState, limit: int) -> None:
        st.write_sysfs(str(self.v1 / "memory.limit_in_bytes"), limit)

    def set_soft_limit(self, st: HostState, soft: int) -> None:
        st.write_sysfs(str(self.v1 / "memory.soft_limit_in_bytes"), soft)

    def join(self, pid: int) -> None:
        (self.v1 / "cgroup.procs").write_text(f"{pid}\n")
        if self.v2 is not None:
            (self.v2 / "cgroup.procs").write_text(f"{pid}\n")

    def usage(self) -> int:
        return int((self.v1 / "memory.usage_in_bytes").read_text())

    def stat(self) -> dict[str, int]:
        return read_stat(self.v1)

    def pressure(self) -> dict[str, float]:
        return read_pressure(self.v2 / "memory.pressure") if self.v2 is not None else {}

    def procs(self) -> list[int]:
        return [int(x) for x in (self.v1 / "cgroup.procs").read_text().split()]

    def oom_control(self) -> dict[str, int]:
        """``memory.oom_control``'s counters: ``oom_kill_disable``, ``under_oom``, ``oom_kill``
        (cgroup-v1/memory.rst, section 10)."""
        f = (self.v1 / "memory.oom_control").read_text().split()
        return {k: int(v) for k, v in zip(f[::2], f[1::2], strict=False)}


def create_parent(st: HostState, limit: int) -> Group:
    """The host's cgroup, limited to ``limit`` bytes (the scaled host memory)."""
    reason = available()
    if reason:
        raise HostError(reason)
    v1 = V1_ROOT / PARENT
    _mkdir(st, v1)
    v2 = None
    if psi_available():
        v2 = V2_ROOT / PARENT
        _mkdir(st, v2)
    g = Group(v1, v2)
    g.set_limit(st, limit)
    return g


def create_vm(st: HostState, parent: Group, name: str) -> Group:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    v1 = parent.v1 / safe
    _mkdir(st, v1)
    v2 = None
    if parent.v2 is not None:
        v2 = parent.v2 / safe
        _mkdir(st, v2)
    return Group(v1, v2)


def own_group_pids(group: Group) -> set[int]:
    """Tasks in the group (used to check that only workers we started are inside)."""
    return set(group.procs()) - {os.getpid()}
