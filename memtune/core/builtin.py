"""The core's own settings and knobs, declared through the same hooks plugins use."""

from __future__ import annotations

import numpy as np

from memtune.plugin import Knob, Setting, hookimpl, settings_hook

SETTINGS = (
    Setting("memtune.guest_kernel_share", "float", 0.0,
            "Share of configured memory the guest kernel keeps for per-page structures, sized by "
            "configured memory (a ballooned VM keeps them): the rest holds the workload.",
            "Linux: one 64-byte struct page per 4 KiB page = 1.56 % of memory (mm_types.h); 0 keeps "
            "the workload's allocated share of the whole VM", minimum=0.0, maximum=0.5),
    Setting("latency.guest_swap_in", "seconds", 160e-6,
            "A guest touch of a page on its own disk (paged out, or page cache dropped): its virtual "
            "disk read plus the guest fault and paravirtual I/O path.",
            "datastore latency + guest fault = SSD 4 KiB read ~150 us + ~10 us guest fault and PVSCSI "
            "round trip"),
    Setting("Mem.IdleTax", "percent", 75, "Idle memory tax rate tau, percent (k = 1/(1 - tau)).",
            "Waldspurger OSDI 2002 s.5.2; ESXi default Mem.IdleTax = 75", minimum=0, maximum=99,
            tunable=True),
    Setting("Mem.MemMinFreePct", "percent", 0,
            "Free memory the VMkernel keeps (minFree), percent of host memory; 0 = the sliding scale "
            "(6 % of the first 4 GB, 4 % of the next 8, 2 % of the next 16, 1 % of the rest). The "
            "soft, hard and low thresholds are 64, 32 and 16 % of minFree either way.",
            "VMware KB 1033687; vSphere Resource Management guide, Advanced Memory Attributes: "
            "Mem.MemMinFreePct default 0 (sliding scale since vSphere 5)", minimum=0, maximum=50,
            tunable=True),
    Setting("Mem.SamplePeriod", "seconds", 60, "Working-set sampling period.",
            "ESXi default Mem.SamplePeriod = 60 s", minimum=1),
    Setting("Mem.SampleSize", "int", 100, "Pages watched per VM per sampling period.",
            "Waldspurger OSDI 2002 s.5.3 (n = 100)", minimum=1),
    Setting("Mem.AllocGuestLargePage", "bool", True,
            "Back guest memory with 2 MB large pages (not shareable until broken).",
            "ESXi default Mem.AllocGuestLargePage = 1", tunable=True),
    Setting("memtune.sample_alpha_fast", "float", 0.5, "Weight of a new sample in the fast average.",
            "model choice: rises within about two periods", minimum=0.01, maximum=1),
    Setting("memtune.sample_alpha_slow", "float", 0.1, "Weight of a new sample in the slow average.",
            "model choice: falls over about ten periods", minimum=0.001, maximum=1),
    Setting("memtune.state_hysteresis", "float", 0.06,
            "Margin (share of minFree) by which free memory must pass a threshold to leave a state upward.",
            "model choice; ESXi keeps an undocumented margin", minimum=0, maximum=1),
    Setting("memtune.touch_samples", "int", 32,
            "Touch draws per VM per simulated second; each stands for touch_rate/touch_samples touches.",
            "model choice: cost follows activity, not memory size; stall agrees within the seed "
            "spread from 32 draws up (docs/model.md, Touches and faults)", minimum=1),
    Setting("memtune.touch_interval", "seconds", 10.0,
            "Longest span one round of touch draws stands for, a whole number of ticks, cut short at "
            "the next sampling period, the end of the warm-up or the end of the run. Rounds span "
            "more than one tick only while no VM starts, boots or changes phase, the host is above "
            "the hard state and cannot reach it within the span at its recent rate, and no VM would "
            "lose over 2 % of its faults to repeats (a thrashing VM stays per tick). At or below the "
            "tick: every tick. Allocation, memory states and reclamation run every tick either way.",
            "model choice: on the built-in scenarios 10 s gives the stall, latency, balloon and "
            "sharing of per-tick draws within their seed spread at about 0.8x the time of `small` "
            "(docs/model.md, Touch spans)", minimum=0),
    Setting("memtune.host_victims", "str", "random",
            "Pages the hypervisor pages out: random (ESX) or cold (a Linux host's LRU: guest-free, then "
            "outside the hot window, then any).",
            "ESX: Waldspurger, OSDI 2002, s.4.3 (random victims); Linux: mm/vmscan.c LRU reclaim",
            choices=("random", "cold")),
    Setting("memtune.warm_start", "bool", False,
            "Start VMs (powered on at time 0, not booting) as if they had been running: their "
            "most-touched allocated pages resident, up to their initial allocation target.",
            "model choice: a host under study has been up for a while; turn off to watch memory fill"),
    Setting("latency.dram", "seconds", 100e-9, "DRAM access, the baseline every touch pays.",
            "common figure: ~100 ns loaded latency"),
    Setting("latency.page_alloc", "seconds", 1e-6,
            "First touch of a page with no machine page: EPT/NPT violation exit plus zeroing 4 KiB.",
            "KVM/ESX nested-paging fault ~1 us"),
    Setting("latency.blocked_alloc", "seconds", 1e-3,
            "A fault that needs a machine page while the VM is blocked (low state, or at its limit "
            "with nothing to page out) waits this long.",
            "model choice: one reclamation round (ESX low state blocks VMs above target)"),
)


memtune_register_settings = settings_hook(SETTINGS)


@hookimpl
def memtune_tick(host, now, dt):
    """Touches of pages the guest holds on its own disk (a memory demand above its capacity, see
    ``WorkloadState._overflow``): each is a guest page-in at ``latency.guest_swap_in``."""
    rate = host.workload.overflow_rate
    if not rate.any():
        return
    weight = rate * dt
    lat = float(host.settings["latency.guest_swap_in"])
    vm = np.flatnonzero(weight)
    book = host.book
    book.add(vm, np.full(vm.size, lat), weight[vm])
    book.touches += weight
    book.stall += np.minimum(weight * lat, dt)
    book.count_faults("guest_disk", vm, weight[vm])
    host.count_per_vm("guest_page_in_bytes", weight * 4096.0)


@hookimpl
def memtune_register_knobs(register, scenario):
    register(Knob("Mem.IdleTax", kind="int", low=0, high=95, help="idle memory tax, percent"))
    # 0 keeps the sliding scale; KB 1033687 discusses 2-6 %
    register(Knob("Mem.MemMinFreePct", kind="int", low=0, high=6,
                  help="minFree as a percent of host memory (0: sliding scale)"))
    register(Knob("reservation", target="vm", kind="real", low=0.0, high=0.9,
                  help="sched.mem.min as a share of configured memory"))
    register(Knob("limit", target="vm", kind="real", low=0.3, high=1.0,
                  help="sched.mem.max as a share of configured memory"))
    register(Knob("shares", target="vm", kind="int", low=5, high=40, prior="log-uniform",
                  help="sched.mem.shares per MB of configured memory"))
