"""A scenario scaled down to fit this machine, run the same way by the simulator and the real host.

Memory (host, VMs, reservations, limits, balloon caps and every setting of kind ``bytes``) is
divided by ``memory_scale``; the workload's schedule (phase times, diurnal period, boot time, VM
start times, warm-up) and every period setting (kind ``seconds``; latencies and the machine's
own times ``MACHINE_TIMES`` excepted) are compressed by ``duration / scenario duration``, and
byte rates (balloon rates) grow by the same factor; touch rates stay per second, so a scaled page
is touched more often, as a faster schedule asks; pages are 4 KiB (``page_scale`` 1) so that one
simulated page is one real page. The live host backs VMs with 4 KiB pages (THP off in workers),
so the scaled scenario sets ``Mem.AllocGuestLargePage = false``. ``max_vms`` keeps that many VMs,
taken in turn from each VM group (name without its ``-NN`` suffix), and shrinks the host in
proportion to their memory.
"""

from __future__ import annotations

import dataclasses
import math
import re

from memtune.core.plugins import build_plugin_manager
from memtune.core.registry import settings_registry
from memtune.core.scenario import Scenario
from memtune.core.vm import VMSpec
from memtune.core.workload import WorkloadSpec
from memtune.errors import UserError

PAGE = 4096
# Times of the machine, not of the schedule: the kernel tick and ksmd's CPU per page are as long on
# a scaled run as on a full one (ksmd sleeps ``ksm.sleep_millisecs`` of real time on both sides)
MACHINE_TIMES = frozenset({"memtune.ksm_jiffy", "memtune.ksm_page_cost", "memtune.ksm_tree_cost"})


def _group(name: str) -> str:
    return re.sub(r"-\d+$", "", name)


def pick_vms(vms: tuple[VMSpec, ...], max_vms: int | None) -> tuple[VMSpec, ...]:
    """At most ``max_vms`` VMs, round-robin over the groups, in the scenario's order."""
    if max_vms is None or max_vms >= len(vms):
        return vms
    groups: dict[str, list[int]] = {}
    for i, vm in enumerate(vms):
        groups.setdefault(_group(vm.name), []).append(i)
    keep: list[int] = []
    queues = [list(g) for g in groups.values()]
    while len(keep) < max_vms:
        for q in queues:
            if q and len(keep) < max_vms:
                keep.append(q.pop(0))
    return tuple(vms[i] for i in sorted(keep))


@dataclasses.dataclass(frozen=True)
class ScaledVM(VMSpec):
    """A VM of a scaled scenario: its overhead is the full-size VM's, scaled like its memory (the
    vSphere overhead table does not extrapolate down to a few MiB)."""

    scaled_overhead: int = 0

    @property
    def overhead(self) -> int:
        return self.scaled_overhead


def _pages(n: float) -> int:
    return max(PAGE, int(round(n / PAGE)) * PAGE)


def _workload(wl: WorkloadSpec, f: float) -> WorkloadSpec:
    phases = tuple(dataclasses.replace(p, at=p.at * f) for p in wl.phases)
    return dataclasses.replace(wl, phases=phases, period=wl.period * f, boot_time=wl.boot_time * f)


def _vm(vm: VMSpec, s: float, f: float) -> VMSpec:
    fields = {fl.name: getattr(vm, fl.name) for fl in dataclasses.fields(VMSpec)}
    fields.update(
        memory=_pages(vm.memory / s), reservation=_pages(vm.reservation / s) if vm.reservation else 0,
        limit=None if vm.limit is None else _pages(vm.limit / s),
        maxmemctl=None if vm.maxmemctl is None else _pages(vm.maxmemctl / s),
        workload=_workload(vm.workload, f), start=vm.start * f, extra=dict(vm.extra))
    return ScaledVM(**fields, scaled_overhead=int(vm.overhead / s))


def scale_scenario(sc: Scenario, memory_scale: float, duration: float, *, tick: float = 1.0,
                   max_vms: int | None = None) -> Scenario:
    """``sc`` with memory / ``memory_scale`` and its schedule compressed into ``duration`` seconds."""
    if memory_scale < 1:
        raise UserError(f"must be at least 1, got {memory_scale}", field="--memory-scale")
    if duration <= 0:
        raise UserError("must be positive", field="--duration")
    f = duration / sc.duration
    vms = pick_vms(sc.vms, max_vms)
    share = sum(v.memory for v in vms) / sum(v.memory for v in sc.vms)
    reg = settings_registry(build_plugin_manager(disable=sc.disable))
    settings = reg.resolve(sc.settings, source=sc.source)
    known = {s.name: s for s in reg}
    for name, value in settings.items():
        st = known.get(name)
        if st is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if st.kind == "bytes":                   # sizes shrink with memory; rates also run faster
            value = int(math.ceil(value / (memory_scale * (f if "rate" in name else 1.0))))
        elif st.kind == "seconds" and not name.startswith("latency.") and name not in MACHINE_TIMES:
            value = value * f                     # periods and intervals follow the schedule
        else:
            continue
        lo = st.minimum if st.minimum is not None else -math.inf
        hi = st.maximum if st.maximum is not None else math.inf
        settings[name] = min(max(value, lo), hi)   # within the setting's range (Mem.SamplePeriod >= 1 s)
    settings["Mem.AllocGuestLargePage"] = False
    host = dataclasses.replace(sc.host, memory=_pages(sc.host.memory * share / memory_scale), page_scale=1)
    return sc.replace(
        name=f"{sc.name}@1/{memory_scale:g}", host=host, vms=tuple(_vm(v, memory_scale, f) for v in vms),
        duration=float(duration), tick=float(tick), warmup=sc.warmup * f, settings=settings,
        report_interval=max(tick, duration / 20),
        description=f"{sc.name} scaled: memory / {memory_scale:g}, {len(vms)} of {len(sc.vms)} VMs, "
                    f"{sc.duration:g} s of schedule in {duration:g} s")
