"""The scenario file schema: one model per TOML section, each field with its type and range.

Sections: top level (:class:`ScenarioFile`), ``[host]`` (:class:`HostSection`), ``[workloads.NAME]``
and inline ``workload = {...}`` (:class:`WorkloadSection`, with :class:`PhaseSection`, the content and
compressibility mixes), ``[[vm]]`` (:class:`VMSection`), ``[[content_group]]``
(:class:`ContentGroupSection`), ``[plugins]``. A new field goes into its
section's model (with a default, so existing files stay valid) and into the builder in
``memtune.core.scenario``. Rules across fields live in each model's ``model_validator`` and raise
:class:`~memtune.schema.errors.FieldError` naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)

from memtune.core.content_groups import MAX_GROUPS
from memtune.core.workload import COMPRESS_CLASSES, CONTENT_KINDS, KINDS, MAX_DEMAND, SKEWS
from memtune.schema.errors import FieldError
from memtune.schema.types import (
    HOST_MIN,
    MAX_SIZE,
    SEED_MAX,
    VM_MAX,
    VM_MIN,
    Bytes,
    Duration,
    Fraction,
    FractionOrSize,
    Name,
    Shares,
    Size,
)
from memtune.units import format_size

MAX_TOUCH_RATE = 1e8  # 4 KiB touches per second per VM: ~400 GB/s, above any memory bus
MAX_COUNT = 10000  # VMs one [[vm]] table may expand to
MAX_PAGE_SCALE = 1 << 20  # 4 GiB simulated pages


class Section(BaseModel):
    """Strict types (no "1" for 1, no true for 1), no unknown keys, no NaN or infinity."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    unknown_key: ClassVar[str] = "unknown key"


def _page_scale(value: Any) -> int | None:
    if value == "auto":
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_PAGE_SCALE
        or value & (value - 1)
    ):
        raise ValueError(f'must be a power of two 1..{MAX_PAGE_SCALE} or "auto"')
    return value


class HostSection(Section):
    """``[host]``: the physical host."""

    memory: Size(HOST_MIN, MAX_SIZE, "host memory")  # type: ignore[valid-type]
    page_scale: Annotated[
        Any,
        BeforeValidator(_page_scale),
        WithJsonSchema(
            {
                "anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SCALE}],
                "description": "4 KiB pages per simulated page: a power of two, or auto",
            }
        ),
    ] = None
    allow_overcommit: bool = Field(False, description="allow a VM configured larger than the host's memory")


class _Mix(Section):
    @model_validator(mode="after")
    def _adds_up(self) -> _Mix:
        total = sum(getattr(self, f) for f in type(self).model_fields)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"shares must add up to 1, they add up to {total:g}")
        return self

    def values(self) -> tuple[float, ...]:
        return tuple(float(getattr(self, f)) for f in type(self).model_fields)


class ContentMix(_Mix):
    """Share of pages holding zeros, a guest-image template, intra-VM duplicates, unique data."""

    zero: Fraction = 0.0
    template: Fraction = 0.0
    duplicate: Fraction = 0.0
    unique: Fraction = 0.0


class CompressMix(_Mix):
    """Share of pages compressing to <= 1 KiB, <= 2 KiB, <= 3 KiB, or worse."""

    le_1k: Fraction = 0.0
    le_2k: Fraction = 0.0
    le_3k: Fraction = 0.0
    worse: Fraction = 0.0


assert tuple(ContentMix.model_fields) == CONTENT_KINDS and tuple(CompressMix.model_fields) == COMPRESS_CLASSES


class PhaseSection(Section):
    """One entry of ``phases``: from ``at`` on, a new working set / allocation, hot window moved."""

    at: Duration()  # type: ignore[valid-type]
    wss: FractionOrSize() | None = None  # type: ignore[valid-type]
    allocated: FractionOrSize() | None = None  # type: ignore[valid-type]
    shift: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0


class WorkloadSection(Section):
    """A workload table (``[workloads.NAME]`` or a VM's inline ``workload``); fields not given keep
    the defaults of ``memtune.core.workload.WorkloadSpec``."""

    kind: Literal[KINDS] | None = None  # type: ignore[valid-type]
    # above 1: the guest's demand exceeds its configured memory (it pages to its own disk)
    allocated: FractionOrSize(MAX_DEMAND) | None = None  # type: ignore[valid-type]
    wss: FractionOrSize(MAX_DEMAND) | None = None  # type: ignore[valid-type]
    cache: FractionOrSize(MAX_DEMAND) | None = Field(  # type: ignore[valid-type]
        None, description="page cache: the coldest part of allocated (clean, dropped first)"
    )
    skew: Literal[SKEWS] | None = None  # type: ignore[valid-type]
    hot_share: Fraction | None = None
    zipf_s: Annotated[float, Field(ge=0.0, le=5.0)] | None = None
    touch_rate: (
        Annotated[float, Field(ge=0.0, le=MAX_TOUCH_RATE, description="4 KiB page touches per second")] | None
    ) = None
    write_fraction: Fraction | None = None
    content: ContentMix | None = None
    duplicate_copies: Annotated[int, Field(ge=2, le=1 << 20)] | None = None
    compressibility: CompressMix | None = None
    phases: list[PhaseSection] | None = None
    period: Duration(positive=True) | None = None  # type: ignore[valid-type]
    amplitude: Fraction | None = None
    boot_time: Duration(positive=True) | None = None  # type: ignore[valid-type]
    boot_rate: (
        Annotated[float, Field(ge=0.0, le=1e4, description="touch-rate multiplier while booting")] | None
    ) = None
    leak_rate: (
        Annotated[float, Field(ge=0.0, le=100.0, description="fraction of configured memory leaked per hour")]
        | None
    ) = None
    profile: str | None = None

    def sizes(self) -> list[tuple[str, Bytes]]:
        """(field path, bytes) of the fields given as a size, not a fraction, phases included."""
        out = [
            (f, getattr(self, f))
            for f in ("allocated", "wss", "cache")
            if isinstance(getattr(self, f), Bytes)
        ]
        for i, ph in enumerate(self.phases or []):
            out += [
                (f"phases[{i}].{f}", getattr(ph, f))
                for f in ("allocated", "wss")
                if isinstance(getattr(ph, f), Bytes)
            ]
        return out


def _workload_tag(value: Any) -> str:
    return "@name" if isinstance(value, str) else "@table"


class VMSection(Section):
    """``[[vm]]``: one VM, or ``count`` VMs named NAME-01, NAME-02, ..."""

    name: Name
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1
    memory: Size(VM_MIN, VM_MAX, "configured memory")  # type: ignore[valid-type]
    workload: Annotated[
        Annotated[str, Tag("@name")] | Annotated[WorkloadSection, Tag("@table")], Discriminator(_workload_tag)
    ] = Field(default_factory=WorkloadSection)
    reservation: Size(0, VM_MAX, "sched.mem.min") = 0  # type: ignore[valid-type]
    limit: Size(0, VM_MAX, "sched.mem.max") | None = None  # type: ignore[valid-type]
    shares: Shares = "normal"
    balloon_driver: bool = True
    maxmemctl: Size(0, VM_MAX, "sched.mem.maxmemctl") | None = None  # type: ignore[valid-type]
    salt: Name | None = None
    encrypted: bool = False
    large_pages: bool = True
    image: str = ""
    start: Duration() = 0.0  # type: ignore[valid-type]
    stagger: Duration() = 0.0  # type: ignore[valid-type]

    def check(self, at: str) -> None:
        """Rules across this VM's fields; ``at`` is its path (``vm[2]``)."""
        if self.reservation > self.memory:
            raise FieldError(f"{at}.reservation", "reservation is larger than configured memory")
        if self.limit is not None and self.limit > self.memory:
            raise FieldError(f"{at}.limit", "limit is larger than configured memory")
        if self.limit is not None and self.reservation > self.limit:
            raise FieldError(f"{at}.reservation", "reservation is larger than the limit")
        if isinstance(self.workload, WorkloadSection):
            for f, value in self.workload.sizes():
                fraction_of(value, self.memory, f"{at}.workload.{f}", most_of(f))

    def names(self) -> list[str]:
        """The VM names this table expands to."""
        if self.count == 1:
            return [self.name]
        width = max(2, len(str(self.count)))
        return [f"{self.name}-{j + 1:0{width}d}" for j in range(self.count)]


def _patterns(value: Any) -> list[str]:
    vms = [value] if isinstance(value, str) else value
    if not isinstance(vms, list) or not vms or not all(isinstance(p, str) and p for p in vms):
        raise ValueError("expected a list of VM name patterns")
    return vms


class ContentGroupSection(Section):
    """``[[content_group]]``: content a subset of the VMs hold (``memtune.core.content_groups``)."""

    name: Name
    share: Annotated[float, Field(gt=0.0, le=1.0, description="of a member's configured memory")]
    members: Annotated[
        float, Field(gt=0.0, le=1.0, description="probability that a matching VM holds it")
    ] = 1.0
    vms: Annotated[
        Any,
        BeforeValidator(_patterns),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                ],
                "description": "VM name patterns (fnmatch)",
            }
        ),
    ] = ["*"]


class PluginsSection(Section):
    """``[plugins]``."""

    disable: list[str] = []


class ScenarioFile(Section):
    """A scenario file: a host, its VMs and their workloads (``docs/scenarios.md``)."""

    name: Name | None = None
    description: str = ""
    duration: Duration(positive=True) = 1800.0  # type: ignore[valid-type]
    tick: Duration(positive=True) = 2.0  # type: ignore[valid-type]
    warmup: Duration() = 0.0  # type: ignore[valid-type]
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] = 0
    report_interval: Duration(positive=True) = 60.0  # type: ignore[valid-type]
    host: HostSection
    settings: dict[str, Any] = Field(default_factory=dict, description="host settings by their real names")
    plugins: PluginsSection = Field(default_factory=PluginsSection)
    workloads: dict[str, WorkloadSection] = Field(default_factory=dict)
    vm: Annotated[list[VMSection], Field(min_length=1)]
    content_group: Annotated[list[ContentGroupSection], Field(max_length=MAX_GROUPS)] = []

    @model_validator(mode="after")
    def _cross_fields(self) -> ScenarioFile:
        if self.tick > self.duration:
            raise FieldError("tick", "tick is longer than the run")
        if self.warmup >= self.duration:
            raise FieldError(
                "warmup",
                f"the warm-up ({self.warmup:g} s) must end before the run does "
                f"(duration {self.duration:g} s)",
            )
        groups: dict[str, int] = {}
        for i, g in enumerate(self.content_group):
            if g.name in groups:
                raise FieldError(f"content_group[{i}].name", f"duplicate content group {g.name!r}")
            groups[g.name] = i
        seen: set[str] = set()
        for i, vm in enumerate(self.vm):
            vm.check(f"vm[{i}]")
            if isinstance(vm.workload, str):
                if vm.workload not in self.workloads:
                    raise FieldError(f"vm[{i}].workload", f"no workload named {vm.workload!r} in [workloads]")
                for f, value in self.workloads[vm.workload].sizes():
                    fraction_of(value, vm.memory, f"workloads.{vm.workload}.{f}", most_of(f))
            if vm.memory > self.host.memory and not self.host.allow_overcommit:
                raise FieldError(
                    f"vm[{i}].memory",
                    f"{format_size(vm.memory)} is more than the host's {format_size(self.host.memory)}"
                    "; set host.allow_overcommit = true if that is meant",
                )
            for vname in vm.names():
                if vname in seen:
                    raise FieldError(f"vm[{i}].name", f"duplicate VM name {vname!r}")
                seen.add(vname)
        return self


def fraction_of(value: float | Bytes, vm_bytes: int, path: str, most: float = 1.0) -> float:
    """A fraction of configured memory from a fraction or a size (no larger than ``most`` x the VM)."""
    if isinstance(value, Bytes):
        if value > vm_bytes * most:
            what = "the VM's configured memory" if most == 1.0 else f"{most:g} x the VM's configured memory"
            raise FieldError(path, f"{format_size(value)} is larger than {what}")
        return value / vm_bytes
    return float(value)


def most_of(path: str) -> float:
    """How many times the VM's memory a size at ``path`` may be: a workload's allocated, wss and cache
    may exceed it (guest demand), a phase's values may not."""
    return 1.0 if "phases[" in path else MAX_DEMAND


def check_workload(kind: str, wss: float, allocated: float, phases: int, cache: float = 0.0) -> None:
    """Rules across a resolved workload's fields (fractions of configured memory)."""
    if kind == "phased" and not phases:
        raise FieldError("phases", "a phased workload needs at least one phase")
    if cache > allocated + 1e-9:
        raise FieldError("cache", f"page cache ({cache:g}) is larger than allocated memory ({allocated:g})")
    if wss > allocated + 1e-9 and kind != "boot-storm":
        raise FieldError("wss", f"working set ({wss:g}) is larger than allocated memory ({allocated:g})")
