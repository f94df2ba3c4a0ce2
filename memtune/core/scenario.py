"""Scenarios: a host, its VMs and their workloads, as TOML data.

Format (every size with a unit, every time with a unit)::

    name = "small"
    duration = "30m"      # simulated time
    tick = "2s"           # simulated seconds per step
    warmup = "5m"         # statistics start after this
    seed = 42

    [host]
    memory = "64 GiB"
    page_scale = "auto"   # 4 KiB pages per simulated page (power of two), or a number

    [settings]            # host settings by their real names (see `memtune plugins --settings`)
    "Mem.ShareForceSalting" = 2

    [plugins]
    disable = ["swap"]

    [workloads.web]       # named workload profiles (fractions of the VM's configured memory)
    kind = "constant"
    allocated = 0.8
    wss = 0.3

    [[vm]]
    name = "web"          # with count > 1: web-01, web-02, ...
    count = 4
    memory = "6 GiB"
    workload = "web"
    reservation = "1 GiB"

Errors name the file, the table and the field, and end the run with exit code 2.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from memtune.core.content_groups import ContentGroup, parse_content_groups
from memtune.core.names import name_problem
from memtune.core.vm import SHARES_PER_MB, VMSpec
from memtune.core.workload import (
    COMPRESS_CLASSES,
    CONTENT_KINDS,
    KINDS,
    MAX_DEMAND,
    SKEWS,
    Phase,
    WorkloadSpec,
)
from memtune.errors import ConfigError
from memtune.units import parse_duration, parse_size


@dataclass(frozen=True)
class HostSpec:
    """Physical host: memory and the page scale of the simulation."""

    memory: int
    page_scale: int | None = None     # None = choose automatically


@dataclass(frozen=True)
class Scenario:
    """Everything one simulation run needs, as plain data."""

    name: str
    host: HostSpec
    vms: tuple[VMSpec, ...]
    duration: float = 1800.0
    tick: float = 2.0
    warmup: float = 0.0
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    disable: tuple[str, ...] = ()
    description: str = ""
    source: str = "<scenario>"
    report_interval: float = 60.0
    content_groups: tuple[ContentGroup, ...] = ()     # content shared by some VMs (core/content_groups.py)

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)

    def vm_index(self) -> dict[str, int]:
        return {vm.name: i for i, vm in enumerate(self.vms)}


# --- loading -----------------------------------------------------------------------------------

BUILTIN_DIR = "scenarios"
_TOP_KEYS = {"name", "description", "duration", "tick", "warmup", "seed", "host", "settings", "plugins",
             "content_group",
             "workloads", "vm", "report_interval"}
_HOST_KEYS = {"memory", "page_scale"}
_VM_KEYS = {"name", "count", "memory", "workload", "reservation", "limit", "shares", "balloon_driver",
            "maxmemctl", "salt", "encrypted", "large_pages", "image", "start", "stagger"}
_WL_KEYS = {"kind", "allocated", "wss", "cache", "skew", "hot_share", "zipf_s", "touch_rate", "write_fraction",
            "content", "duplicate_copies", "compressibility", "phases", "period", "amplitude",
            "boot_time", "boot_rate", "leak_rate", "profile"}


class _Reader:
    """Typed access to a TOML table that reports file and field on error."""

    def __init__(self, source: str, table: str, data: dict[str, Any], allowed: set[str]) -> None:
        self.source, self.table, self.data = source, table, data
        if not isinstance(data, dict):
            raise ConfigError("expected a table", source=source, field=table)
        for key in data:
            if key not in allowed:
                raise ConfigError(f"unknown key (allowed: {', '.join(sorted(allowed))})",
                                  source=source, field=self.path(key))

    def path(self, key: str) -> str:
        return f"{self.table}.{key}" if self.table else key

    def fail(self, key: str, msg: str) -> ConfigError:
        return ConfigError(msg, source=self.source, field=self.path(key))

    def has(self, key: str) -> bool:
        return key in self.data

    def require(self, key: str) -> Any:
        if key not in self.data:
            raise ConfigError("missing required field", source=self.source, field=self.path(key))
        return self.data[key]

    def size(self, key: str, default: Any = None, *, required: bool = False, positive: bool = False) -> Any:
        if key not in self.data:
            if required:
                self.require(key)
            return default
        try:
            v = parse_size(self.data[key])
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if positive and v <= 0:
            raise self.fail(key, "must be greater than zero")
        return v

    def duration(self, key: str, default: Any = None, *, positive: bool = False) -> Any:
        if key not in self.data:
            return default
        try:
            v = parse_duration(self.data[key])
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if positive and v <= 0:
            raise self.fail(key, "must be greater than zero")
        return v

    def number(self, key: str, default: Any = None, *, lo: float | None = None, hi: float | None = None,
               integer: bool = False) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(key, f"expected a number, got {v!r}")
        if integer and not float(v).is_integer():
            raise self.fail(key, f"expected a whole number, got {v!r}")
        if lo is not None and v < lo:
            raise self.fail(key, f"must be >= {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise self.fail(key, f"must be <= {hi}, got {v!r}")
        return int(v) if integer else float(v)

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data:
            return default
        v = self.data[key]
        if not isinstance(v, bool):
            raise self.fail(key, f"expected true or false, got {v!r}")
        return v

    def text(self, key: str, default: Any = None, *, choices: tuple[str, ...] | None = None) -> Any:
        if key not in self.data:
            return default
        v = self.data[key]
        if not isinstance(v, str):
            raise self.fail(key, f"expected text, got {v!r}")
        if choices is not None and v not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {v!r}")
        return v

    def fraction_or_size(self, key: str, default: float, vm_bytes: int | None, most: float = 1.0) -> float:
        """A share of configured memory: 0.3, or "2 GiB" when the VM size is known; up to ``most``
        (above 1 for a guest whose memory demand exceeds its configured memory)."""
        if key not in self.data:
            return default
        v = self.data[key]
        if isinstance(v, str):
            if vm_bytes is None:
                raise self.fail(key, "give a fraction of configured memory (0..1) in a shared workload")
            try:
                b = parse_size(v)
            except ValueError as exc:
                raise self.fail(key, str(exc)) from None
            if b > vm_bytes * most:
                what = "the VM's configured memory" if most == 1.0 else f"{most:g} x the VM's configured memory"
                raise self.fail(key, f"{v} is larger than {what}")
            return b / vm_bytes
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= most:
            raise self.fail(key, f"expected a fraction 0..{most:g} or a size, got {v!r}")
        return float(v)

    def mix(self, key: str, names: tuple[str, ...], default: tuple[float, ...]) -> tuple[float, ...]:
        if key not in self.data:
            return default
        sub = _Reader(self.source, self.path(key), self.data[key], set(names))
        vals = []
        for n in names:
            vals.append(sub.number(n, 0.0, lo=0.0, hi=1.0))
        total = sum(vals)
        if abs(total - 1.0) > 1e-6:
            raise self.fail(key, f"shares must add up to 1, they add up to {total:g}")
        return tuple(vals)


def parse_workload(source: str, table: str, data: dict[str, Any], vm_bytes: int | None = None,
                   base: WorkloadSpec | None = None) -> WorkloadSpec:
    """A WorkloadSpec from a TOML table (fields not given come from ``base``)."""
    r = _Reader(source, table, data, _WL_KEYS)
    b = base or WorkloadSpec()
    phases: list[Phase] = []
    if r.has("phases"):
        raw = r.data["phases"]
        if not isinstance(raw, list):
            raise r.fail("phases", "expected an array of tables")
        for i, ph in enumerate(raw):
            pr = _Reader(source, f"{table}.phases[{i}]", ph, {"at", "wss", "allocated", "shift"})
            at = pr.duration("at")
            if at is None:
                pr.require("at")
            phases.append(Phase(at=at, wss=pr.fraction_or_size("wss", None, vm_bytes) if pr.has("wss") else None,
                                allocated=pr.fraction_or_size("allocated", None, vm_bytes)
                                if pr.has("allocated") else None,
                                shift=pr.number("shift", 0.0, lo=-1.0, hi=1.0)))
        phases.sort(key=lambda p: p.at)
    kind = r.text("kind", b.kind, choices=KINDS)
    spec = WorkloadSpec(
        kind=kind,
        allocated=r.fraction_or_size("allocated", b.allocated, vm_bytes, most=MAX_DEMAND),
        wss=r.fraction_or_size("wss", b.wss, vm_bytes, most=MAX_DEMAND),
        cache=r.fraction_or_size("cache", b.cache, vm_bytes, most=MAX_DEMAND),
        skew=r.text("skew", b.skew, choices=SKEWS),
        hot_share=r.number("hot_share", b.hot_share, lo=0.0, hi=1.0),
        zipf_s=r.number("zipf_s", b.zipf_s, lo=0.0, hi=5.0),
        touch_rate=r.number("touch_rate", b.touch_rate, lo=0.0),
        write_fraction=r.number("write_fraction", b.write_fraction, lo=0.0, hi=1.0),
        content=r.mix("content", CONTENT_KINDS, b.content),
        duplicate_copies=r.number("duplicate_copies", b.duplicate_copies, lo=2, integer=True),
        compressibility=r.mix("compressibility", COMPRESS_CLASSES, b.compressibility),
        phases=tuple(phases) if phases else b.phases,
        period=r.duration("period", b.period, positive=True),
        amplitude=r.number("amplitude", b.amplitude, lo=0.0, hi=1.0),
        boot_time=r.duration("boot_time", b.boot_time, positive=True),
        boot_rate=r.number("boot_rate", b.boot_rate, lo=0.0),
        leak_rate=r.number("leak_rate", b.leak_rate, lo=0.0),
        profile=r.text("profile", b.profile),
    )
    if spec.kind == "phased" and not spec.phases:
        raise r.fail("phases", "a phased workload needs at least one phase")
    if spec.cache > spec.allocated + 1e-9:
        raise r.fail("cache", f"page cache ({spec.cache:g}) is larger than allocated memory ({spec.allocated:g})")
    if spec.wss > spec.allocated + 1e-9 and spec.kind != "boot-storm":
        raise r.fail("wss", f"working set ({spec.wss:g}) is larger than allocated memory ({spec.allocated:g})")
    return spec


def _parse_shares(r: _Reader, key: str) -> str | int:
    if key not in r.data:
        return "normal"
    v = r.data[key]
    if isinstance(v, str):
        if v not in SHARES_PER_MB:
            raise r.fail(key, f"expected low, normal, high or a number, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise r.fail(key, f"expected low, normal, high or a positive whole number, got {v!r}")
    return v


def scenario_from_dict(data: dict[str, Any], source: str,
                       resolve_profile: Any = None) -> Scenario:
    """Build and validate a Scenario from parsed TOML. ``resolve_profile(path, table)`` may fill
    workload tables from measured profiles (``profile = "db1.toml"``)."""
    top = _Reader(source, "", data, _TOP_KEYS)
    host_r = _Reader(source, "host", top.require("host"), _HOST_KEYS)
    host_mem = host_r.size("memory", required=True, positive=True)
    scale = None
    if host_r.has("page_scale") and host_r.data["page_scale"] != "auto":
        scale = host_r.number("page_scale", integer=True, lo=1)
        if scale & (scale - 1):
            raise host_r.fail("page_scale", "must be a power of two or \"auto\"")
    workloads_raw = data.get("workloads", {})
    if not isinstance(workloads_raw, dict):
        raise ConfigError("expected a table of named workloads", source=source, field="workloads")
    for wname, wdata in workloads_raw.items():
        if not isinstance(wdata, dict):
            raise ConfigError("expected a table", source=source, field=f"workloads.{wname}")
    vms_raw = top.require("vm")
    if not isinstance(vms_raw, list) or not vms_raw:
        raise ConfigError("expected at least one [[vm]] table", source=source, field="vm")
    vms: list[VMSpec] = []
    seen: set[str] = set()
    for i, vdata in enumerate(vms_raw):
        r = _Reader(source, f"vm[{i}]", vdata, _VM_KEYS)
        name = r.text("name")
        if name is None:
            r.require("name")
        if (problem := name_problem(name)) is not None:
            raise r.fail("name", problem)
        salt = r.text("salt")
        if salt is not None and (problem := name_problem(salt)) is not None:
            raise r.fail("salt", problem)
        mem = r.size("memory", required=True, positive=True)
        count = r.number("count", 1, lo=1, integer=True)
        wref = r.data.get("workload", {})
        if isinstance(wref, str):
            if wref not in workloads_raw:
                raise r.fail("workload", f"no workload named {wref!r} in [workloads]")
            wtable, wdata = f"workloads.{wref}", workloads_raw[wref]
        elif isinstance(wref, dict):
            wtable, wdata = f"vm[{i}].workload", wref
        else:
            raise r.fail("workload", "expected the name of a [workloads] table or an inline table")
        if resolve_profile is not None and isinstance(wdata, dict) and "profile" in wdata:
            wdata = resolve_profile(wdata, wtable)
        workload = parse_workload(source, wtable, wdata, mem)
        reservation = r.size("reservation", 0)
        limit = r.size("limit", None)
        if reservation > mem:
            raise r.fail("reservation", "reservation is larger than configured memory")
        if limit is not None and limit > mem:
            raise r.fail("limit", "limit is larger than configured memory")
        if limit is not None and reservation > limit:
            raise r.fail("reservation", "reservation is larger than the limit")
        maxmemctl = r.size("maxmemctl", None)
        start = r.duration("start", 0.0)
        stagger = r.duration("stagger", 0.0)
        common = dict(memory=mem, workload=workload, reservation=reservation, limit=limit,
                      shares=_parse_shares(r, "shares"), balloon_driver=r.boolean("balloon_driver", True),
                      maxmemctl=maxmemctl, salt=salt, encrypted=r.boolean("encrypted", False),
                      large_pages=r.boolean("large_pages", True), image=r.text("image", ""))
        width = max(2, len(str(count)))
        for j in range(count):
            vname = name if count == 1 else f"{name}-{j + 1:0{width}d}"
            if vname in seen:
                raise r.fail("name", f"duplicate VM name {vname!r}")
            seen.add(vname)
            vms.append(VMSpec(name=vname, start=start + j * stagger, **common))
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise ConfigError("expected a table", source=source, field="settings")
    plugins = _Reader(source, "plugins", data.get("plugins", {}), {"disable"})
    disable = plugins.data.get("disable", [])
    if not isinstance(disable, list) or not all(isinstance(x, str) for x in disable):
        raise plugins.fail("disable", "expected a list of plugin names")
    duration = top.duration("duration", 1800.0, positive=True)
    tick = top.duration("tick", 2.0, positive=True)
    if tick > duration:
        raise top.fail("tick", "tick is longer than the run")
    sc_name = top.text("name", Path(source).stem)
    if (problem := name_problem(sc_name)) is not None:
        raise top.fail("name", problem)
    return Scenario(
        name=sc_name,
        description=top.text("description", ""),
        host=HostSpec(memory=host_mem, page_scale=scale),
        vms=tuple(vms),
        duration=duration,
        tick=tick,
        warmup=top.duration("warmup", 0.0),
        seed=top.number("seed", 0, integer=True, lo=0),
        settings=dict(settings),
        disable=tuple(disable),
        source=source,
        report_interval=top.duration("report_interval", 60.0, positive=True),
        content_groups=parse_content_groups(data.get("content_group"), source),
    )


def builtin_names() -> list[str]:
    files = resources.files("memtune.core").joinpath(BUILTIN_DIR)
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def builtin_text(name: str) -> str:
    return resources.files("memtune.core").joinpath(BUILTIN_DIR, f"{name}.toml").read_text()


def load_scenario(ref: str | Path | None = None) -> Scenario:
    """A built-in scenario by name (default ``small``) or a TOML file by path."""
    ref = "small" if ref is None else ref
    if isinstance(ref, str) and ref in builtin_names():
        return _parse_text(builtin_text(ref), f"<builtin {ref}>", None)
    path = Path(ref)
    if not path.exists():
        raise ConfigError(f"no such scenario file, and not a built-in scenario "
                          f"(built-in: {', '.join(builtin_names())})", source=str(ref))
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from None
    return _parse_text(text, str(path), path.parent)


def _parse_text(text: str, source: str, folder: Path | None) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None

    def resolve_profile(wdata: dict[str, Any], table: str) -> dict[str, Any]:
        from memtune.core.profile_ref import workload_from_profile

        return workload_from_profile(wdata, folder, source, table)

    return scenario_from_dict(data, source, resolve_profile)
