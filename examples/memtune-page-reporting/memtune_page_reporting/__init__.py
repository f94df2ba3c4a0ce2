"""Free page reporting for memtune: the guest hands memory it has freed back to the host.

virtio-balloon free page reporting (Linux 5.7+, QEMU ``free-page-reporting=on``, libvirt
``<memballoon model='virtio' freePageReporting='on'/>``) lets the guest's page allocator tell the
host which free blocks it holds, so the host discards their backing memory (``MADV_DONTNEED``)
without any memory pressure and without a balloon target. ESX has no equivalent; the built-in
balloon only acts in the soft state. A guest that later reuses a reported page faults and the host
gives it a fresh zeroed page.

The model follows ``mm/page_reporting.c``: once free blocks of at least ``2**order`` 4 KiB pages
appear, a reporting pass runs ``PAGE_REPORTING_DELAY`` (2 s) later and reports at most
``ceil(nr_free / (PAGE_REPORTING_CAPACITY * 16)) * PAGE_REPORTING_CAPACITY`` blocks, i.e. about a
sixteenth of the guest's free memory per pass. Guest-free memory is what lies beyond the guest's
allocated memory (memory it used and then freed: after a boot that zeroed everything, or a phase
that shrank its footprint). Only pages the core holds as resident private frames are released;
pages another plugin holds (shared, compressed, swapped, ballooned) stay with their owner.
Simplification: only the one reporting order is modelled (Linux also reports the higher orders
in the same pass) and guest free memory is taken to be unfragmented.

Cost per tick: one vector update; per pass: the pages reported (random picks in the guest-free
range with :meth:`PageTable.pick_random`), never a walk over all memory.
"""

from __future__ import annotations

import numpy as np

from memtune.plugin import FREE, RESIDENT, Knob, Setting, hookimpl, settings_hook, vm_counter

__version__ = "0.1.0"
NAME = "page_reporting"
PAGE_4K = 4096
REPORTED_METRIC = "memtune_page_reporting_reported_bytes_total"

SETTINGS = (
    Setting("page_reporting.enabled", "bool", False,
            "Guests with a virtio-balloon driver report free memory to the host, which discards it.",
            "QEMU virtio-balloon property free-page-reporting, off by default; libvirt "
            "<memballoon freePageReporting='on'>", tunable=True),
    Setting("page_reporting.delay", "seconds", 2.0,
            "Delay between free blocks appearing in the guest and the reporting pass.",
            "Linux mm/page_reporting.c PAGE_REPORTING_DELAY = 2*HZ", minimum=0.01),
    Setting("page_reporting.capacity", "int", 32,
            "Blocks per report request (scatter-gather entries handed to the device).",
            "Linux mm/page_reporting.h PAGE_REPORTING_CAPACITY = 32", minimum=1),
    Setting("page_reporting.order", "int", 9,
            "Smallest free block reported, 2**order 4 KiB pages.",
            "Linux page_reporting.page_reporting_order, default pageblock_order = 9 on x86-64 (2 MiB)",
            minimum=0, maximum=10),
)


memtune_register_settings = settings_hook(SETTINGS)


@hookimpl
def memtune_register_knobs(register, scenario):
    # only a VM with a balloon driver can report; without one the knob would be a dead dimension
    if any(vm.balloon_driver for vm in scenario.vms):
        register(Knob("page_reporting.enabled", target="host", kind="categorical", categories=(False, True),
                      help="virtio-balloon free page reporting (libvirt freePageReporting)"))


@hookimpl
def memtune_register_metrics(register):
    register(REPORTED_METRIC, "counter", "Guest memory released to the host by free page reporting.",
             ["vm"])


@hookimpl
def memtune_configure(host):
    host.plugin_data[NAME] = {
        "high_water": host.workload.allocated.astype(np.int64).copy(),
        "reported": np.zeros(host.nvm),        # bytes per VM since the start (the metric)
        "passes": 0,
        "resident_only": host.states.table(RESIDENT),
    }


def report_budget(host, free_pages: np.ndarray) -> np.ndarray:
    """Simulated pages one reporting pass may release per VM, given its guest-free pages.

    ``nr_free`` blocks of ``2**order`` 4 KiB pages; Linux reports at most
    ``ceil(nr_free / (capacity * 16)) * capacity`` blocks per pass.
    """
    s = host.settings
    block = PAGE_4K << int(s["page_reporting.order"])
    cap = int(s["page_reporting.capacity"])
    nr_free = np.floor(free_pages * host.page_bytes / block)
    blocks = np.ceil(nr_free / (cap * 16)) * cap
    return np.minimum(np.ceil(blocks * block / host.page_bytes), free_pages).astype(np.int64)


@hookimpl
def memtune_tick(host, now, dt):
    data = host.plugin_data[NAME]
    wl = host.workload
    # the guest-free range that may still hold resident pages: [allocated, high water)
    data["high_water"] = np.maximum(data["high_water"], wl.allocated)
    s = host.settings
    if not s["page_reporting.enabled"]:
        return
    delay = s["page_reporting.delay"]
    passes = int(np.floor(now / delay) - np.floor((now - dt) / delay))
    if passes <= 0:
        return
    able = host.balloon_driver & host.powered & wl.on
    lo = wl.allocated
    hi = np.where(able, data["high_water"], lo)
    if not (hi > lo).any():
        return
    free_pages = np.where(able, host.vm_pages - lo, 0)
    want = np.where(hi > lo, report_budget(host, free_pages) * passes, 0)
    pages = host.pages.pick_random(host.rng(NAME), want, data["resident_only"], lo=lo, hi=hi)
    got = np.bincount(host.pages.vm[pages], minlength=host.nvm)
    # fewer than asked: no resident page is left in the range, it is clean up to `allocated`
    clean = got < want
    data["high_water"] = np.where(clean, lo, data["high_water"])
    data["passes"] += passes
    if pages.size == 0:
        return
    host.pages.set_state(pages, FREE)
    host.pages.content[pages] = 0          # discarded memory comes back zero-filled
    released = got * float(host.page_bytes)
    data["reported"] += released
    host.count_per_vm("page_reporting_bytes", released)


@hookimpl
def memtune_collect_metrics(host):
    # one call per family with the per-VM array: no add_metric per VM (see docs/plugins.md)
    data = host.plugin_data.get(NAME)
    if data is None:
        return None
    return [vm_counter(REPORTED_METRIC, "Guest memory released to the host by free page reporting.",
                       host.vm_names, data["reported"])]
