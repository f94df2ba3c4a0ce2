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

from memtune.core.content_groups import ContentGroup
from memtune.core.names import name_problem
from memtune.core.vm import VMSpec
from memtune.core.workload import Phase, WorkloadSpec
from memtune.errors import ConfigError
from memtune.inputs import read_text
from memtune.schema.errors import FieldError, validate
from memtune.schema.scenario import ScenarioFile, WorkloadSection, check_workload, fraction_of, most_of
from memtune.schema.types import Bytes


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

    def with_duration(self, seconds: float | None, flag: str = "--duration") -> Scenario:
        """This scenario run for ``seconds`` (None: its own duration): at least one tick; a warm-up
        that would not end before the run becomes its first third, as in ``memtune optimize``, so
        statistics never cover an empty window (the summary line states the warm-up used)."""
        if seconds is None:
            return self
        if seconds < self.tick:
            raise ConfigError(f"{seconds:g} s is shorter than one tick ({self.tick:g} s)", field=flag)
        warmup = self.warmup if self.warmup < seconds else seconds / 3
        return self.replace(duration=float(seconds), warmup=float(warmup))

    def vm_index(self) -> dict[str, int]:
        return {vm.name: i for i, vm in enumerate(self.vms)}


# --- loading -----------------------------------------------------------------------------------
# The file's form, types, ranges and cross-field rules are the schema in memtune.schema.scenario;
# this part turns a validated file into the runtime dataclasses above.

BUILTIN_DIR = "scenarios"


def _fraction(value: float | Bytes | None, default: float | None, vm_bytes: int | None, path: str) -> Any:
    if value is None:
        return default
    if isinstance(value, Bytes) and vm_bytes is None:
        raise FieldError(path, "give a fraction of configured memory (0..1) in a shared workload")
    return fraction_of(value, vm_bytes or 0, path, most_of(path))


def workload_spec(
    sec: WorkloadSection, vm_bytes: int | None = None, base: WorkloadSpec | None = None
) -> WorkloadSpec:
    """A WorkloadSpec from a validated workload table (fields not given come from ``base``);
    sizes resolve against ``vm_bytes``. Raises FieldError (path relative to the table)."""
    b = base or WorkloadSpec()
    phases = [
        Phase(
            at=ph.at,
            wss=_fraction(ph.wss, None, vm_bytes, f"phases[{i}].wss"),
            allocated=_fraction(ph.allocated, None, vm_bytes, f"phases[{i}].allocated"),
            shift=ph.shift,
        )
        for i, ph in enumerate(sec.phases or [])
    ]
    phases.sort(key=lambda p: p.at)

    def given(name: str) -> Any:
        v = getattr(sec, name)
        return getattr(b, name) if v is None else v

    spec = WorkloadSpec(
        kind=given("kind"),
        allocated=_fraction(sec.allocated, b.allocated, vm_bytes, "allocated"),
        wss=_fraction(sec.wss, b.wss, vm_bytes, "wss"),
        cache=_fraction(sec.cache, b.cache, vm_bytes, "cache"),
        skew=given("skew"),
        hot_share=given("hot_share"),
        zipf_s=given("zipf_s"),
        touch_rate=given("touch_rate"),
        write_fraction=given("write_fraction"),
        content=b.content if sec.content is None else sec.content.values(),
        duplicate_copies=given("duplicate_copies"),
        compressibility=b.compressibility if sec.compressibility is None else sec.compressibility.values(),
        phases=tuple(phases) if phases else b.phases,
        period=given("period"),
        amplitude=given("amplitude"),
        boot_time=given("boot_time"),
        boot_rate=given("boot_rate"),
        leak_rate=given("leak_rate"),
        profile=given("profile"),
    )
    check_workload(spec.kind, spec.wss, spec.allocated, len(spec.phases), spec.cache)
    return spec


def parse_workload(
    source: str,
    table: str,
    data: dict[str, Any],
    vm_bytes: int | None = None,
    base: WorkloadSpec | None = None,
) -> WorkloadSpec:
    """A WorkloadSpec from a TOML table (fields not given come from ``base``)."""
    sec = validate(WorkloadSection, data, source, prefix=table)
    try:
        return workload_spec(sec, vm_bytes, base)
    except FieldError as exc:
        raise ConfigError(exc.message, source=source, field=f"{table}.{exc.path}") from None


def scenario_from_dict(data: dict[str, Any], source: str, resolve_profile: Any = None) -> Scenario:
    """Build and validate a Scenario from parsed TOML. ``resolve_profile(path, table)`` may fill
    workload tables from measured profiles (``profile = "db1.toml"``)."""
    model = validate(ScenarioFile, data, source)
    vms: list[VMSpec] = []
    for i, vm in enumerate(model.vm):
        if isinstance(vm.workload, str):
            table, wsec, wraw = (
                f"workloads.{vm.workload}",
                model.workloads[vm.workload],
                data["workloads"][vm.workload],
            )
        else:
            table, wsec, wraw = f"vm[{i}].workload", vm.workload, data["vm"][i].get("workload", {})
        if resolve_profile is not None and wsec.profile is not None:
            wsec = validate(WorkloadSection, resolve_profile(wraw, table), source, prefix=table)
        try:
            workload = workload_spec(wsec, vm.memory)
        except FieldError as exc:
            raise ConfigError(exc.message, source=source, field=f"{table}.{exc.path}") from None
        common = dict(
            memory=vm.memory,
            workload=workload,
            reservation=vm.reservation,
            limit=vm.limit,
            shares=vm.shares,
            balloon_driver=vm.balloon_driver,
            maxmemctl=vm.maxmemctl,
            salt=vm.salt,
            encrypted=vm.encrypted,
            large_pages=vm.large_pages,
            image=vm.image,
        )
        for j, vname in enumerate(vm.names()):
            vms.append(VMSpec(name=vname, start=vm.start + j * vm.stagger, **common))
    name = model.name if model.name is not None else Path(source).stem
    if (problem := name_problem(name)) is not None:
        raise ConfigError(problem, source=source, field="name")
    return Scenario(
        name=name,
        description=model.description,
        host=HostSpec(memory=model.host.memory, page_scale=model.host.page_scale),
        vms=tuple(vms),
        duration=model.duration,
        tick=model.tick,
        warmup=model.warmup,
        seed=model.seed,
        settings=dict(model.settings),
        disable=tuple(model.plugins.disable),
        source=source,
        report_interval=model.report_interval,
        content_groups=tuple(
            ContentGroup(g.name, g.share, g.members, tuple(g.vms)) for g in model.content_group
        ),
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
        raise ConfigError(
            f"no such scenario file, and not a built-in scenario (built-in: {', '.join(builtin_names())})",
            source=str(ref),
        )
    text = read_text(path, "a scenario file", error=ConfigError)
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
