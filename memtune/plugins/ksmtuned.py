"""ksmtuned: start, stop and pace KSM from memory load (the script shipped with qemu-kvm/ksmtuned).

Every ``KSM_MONITOR_INTERVAL`` seconds (KiB throughout, as the script reads /proc/meminfo):
``thres = max(total * KSM_THRES_COEF / 100, KSM_THRES_CONST)``; ``committed`` is the resident memory
of the VMs (the script sums ``ps -o rsz`` of qemu processes; here each VM's machine memory plus its
overhead). If ``committed + thres < total`` KSM is stopped (``run=0``). Otherwise ``npages`` (0 at
start) grows by ``KSM_NPAGES_BOOST`` while free memory is below ``thres`` and by
``KSM_NPAGES_DECAY`` otherwise, clamped to [``KSM_NPAGES_MIN``, ``KSM_NPAGES_MAX``], and KSM runs
with ``pages_to_scan = npages`` and ``sleep_millisecs = max(10, KSM_SLEEP_MSEC * 16 GiB / total)``.
Free memory is MemFree + Buffers + Cached; the host model has no page cache, so it is free memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from memtune.plugin import Host
    from memtune.plugins.ksm_scan import KSMState


def adjust(host: Host, d: KSMState) -> None:
    s = host.settings
    total = host.memory / 1024.0
    thres = max(total * int(s["ksmtuned.KSM_THRES_COEF"]) / 100.0, float(s["ksmtuned.KSM_THRES_CONST"]))
    held = float(host.held()[host.powered].sum()) * host.page_bytes
    committed = (held + host.overhead_bytes) / 1024.0
    if committed + thres < total:
        d.run = 0
        return
    free = host.free_bytes() / 1024.0
    step = int(s["ksmtuned.KSM_NPAGES_BOOST"]) if free < thres else int(s["ksmtuned.KSM_NPAGES_DECAY"])
    d.npages = min(max(d.npages + step, int(s["ksmtuned.KSM_NPAGES_MIN"])), int(s["ksmtuned.KSM_NPAGES_MAX"]))
    d.pages_to_scan = d.npages
    d.sleep_ms = max(10, int(int(s["ksmtuned.KSM_SLEEP_MSEC"]) * 16 * 1024 * 1024 // total))
    d.run = 1


def maybe_adjust(host: Host, d: KSMState, now: float) -> None:
    """Run ``adjust`` when its interval has passed (the daemon sleeps first, then adjusts)."""
    if not host.settings["ksmtuned.enabled"]:
        return
    while now >= d.next_tune:
        adjust(host, d)
        d.next_tune += float(host.settings["ksmtuned.KSM_MONITOR_INTERVAL"])
