"""Settings, tuner knobs and metrics of the ``ksm`` plugin (names as in sysfs and ksmtuned.conf)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memtune.plugin import Knob, Setting

KSM_RST = "Documentation/admin-guide/mm/ksm.rst"
KSMTUNED = "ksmtuned (qemu-kvm/ksmtuned package, Red Hat 2009) and its ksmtuned.conf"

SETTINGS = (
    Setting("memtune.sharing", "str", "tps",
            "Page sharing mode: tps (ESX transparent page sharing) or ksm (Linux KSM); the other "
            "plugin stays idle.", "model choice; ESX uses TPS, KVM hosts use KSM", choices=("tps", "ksm")),
    Setting("ksm.run", "int", 1, "ksmd runs (1) or is stopped (0); with ksmtuned on, ksmtuned decides.",
            f"{KSM_RST}: run (the kernel's default is 0; a KVM host that wants sharing sets 1)",
            choices=(0, 1), tunable=True),
    Setting("ksm.pages_to_scan", "int", 100, "4 KiB pages ksmd visits per batch.",
            f"{KSM_RST}: pages_to_scan, default 100", minimum=0, maximum=1_000_000, tunable=True),
    Setting("ksm.sleep_millisecs", "int", 20, "Milliseconds ksmd sleeps between batches.",
            f"{KSM_RST}: sleep_millisecs, default 20", minimum=0, maximum=100_000, tunable=True),
    Setting("ksm.max_page_sharing", "int", 256, "Most mappings of one KSM page; more copies get another.",
            f"{KSM_RST}: max_page_sharing, default 256, minimum 2", minimum=2, maximum=1 << 20, tunable=True),
    Setting("ksm.use_zero_pages", "int", 0,
            "1: a zero page whose checksum held is mapped to the kernel's zero page (no KSM page).",
            f"{KSM_RST}: use_zero_pages, default 0", choices=(0, 1), tunable=True),
    Setting("ksm.smart_scan", "int", 1,
            "1: pages that failed to merge 3 times are skipped for 1, 2, 4 or 8 scans.",
            f"{KSM_RST}: smart_scan, default 1 (Linux 6.7+); mm/ksm.c skip_age()", choices=(0, 1),
            tunable=True),
    Setting("ksm.merge_across_nodes", "int", 1,
            "1: merge pages of all NUMA nodes. The model has one node, so 0 and 1 behave the same.",
            f"{KSM_RST}: merge_across_nodes, default 1", choices=(0, 1)),
    Setting("memtune.ksm_jiffy", "seconds", 0.004,
            "The kernel tick: ksmd's sleep is rounded up to whole jiffies and it wakes on the next one.",
            "CONFIG_HZ=250 on this kernel (/proc/config.gz); 100 pages/20 ms measured at 24-25.5 ms a "
            "batch, 100/10 at 16.7 ms, 100/50 at 57.4 ms (docs/model.md, Linux KSM)", minimum=0),
    Setting("memtune.ksm_page_cost", "seconds", 15e-6,
            "ksmd CPU time per page visited for its checksum (a first visit, a changed page, a KSM page).",
            "measured on this 2-core host under load: the first full scan (checksums only) runs 100 "
            "pages / 20 ms at 25.4 ms a batch, 200 / 20 at 28.3 ms: 14-21 us a page (docs/model.md, "
            "Linux KSM); an idle core is faster", minimum=0),
    Setting("memtune.ksm_tree_cost", "seconds", 55e-6,
            "Extra ksmd time per visit that searches the stable and unstable trees (checksum unchanged): "
            "memcmp of pages along the tree, write-protect and merge.",
            "measured here: merging scans run 32-39 ms a batch against 25-28 ms for the checksum-only "
            "first scan, 53-66 us more a page; calibrate from pages_scanned over time", minimum=0),
    Setting("latency.ksm_cow_break", "seconds", 3e-6,
            "A write to a KSM page: write fault, a new page and a 4 KiB copy (do_wp_page).",
            "~1 us fault + ~1 us allocation + 4 KiB memcpy (0.3 us), as for TPS"),
    Setting("ksmtuned.enabled", "bool", False, "Run ksmtuned, which sets run and pages_to_scan.",
            KSMTUNED),
    Setting("ksmtuned.KSM_MONITOR_INTERVAL", "seconds", 60, "Seconds between ksmtuned adjustments.",
            f"{KSMTUNED}: default 60", minimum=1),
    Setting("ksmtuned.KSM_SLEEP_MSEC", "int", 10,
            "sleep_millisecs for a 16 GiB host; scaled by 16 GiB / memory, at least 10.",
            f"{KSMTUNED}: default 10", minimum=1),
    Setting("ksmtuned.KSM_NPAGES_BOOST", "int", 300, "Added to pages_to_scan while free memory < thres.",
            f"{KSMTUNED}: default 300", minimum=0, tunable=True),
    Setting("ksmtuned.KSM_NPAGES_DECAY", "int", -50, "Added to pages_to_scan while free memory >= thres.",
            f"{KSMTUNED}: default -50", maximum=0),
    Setting("ksmtuned.KSM_NPAGES_MIN", "int", 64, "Lowest pages_to_scan ksmtuned sets.",
            f"{KSMTUNED}: default 64", minimum=0),
    Setting("ksmtuned.KSM_NPAGES_MAX", "int", 1250, "Highest pages_to_scan ksmtuned sets.",
            f"{KSMTUNED}: default 1250", minimum=1, tunable=True),
    Setting("ksmtuned.KSM_THRES_COEF", "int", 20,
            "Percent of memory: thres; KSM runs when committed + thres >= total, boosts when free < thres.",
            f"{KSMTUNED}: default 20", minimum=0, maximum=100, tunable=True),
    Setting("ksmtuned.KSM_THRES_CONST", "int", 2048, "Least thres, in KiB.",
            f"{KSMTUNED}: default 2048", minimum=0),
)

KNOBS = (
    Knob("ksm.pages_to_scan", kind="int", low=16, high=20000, prior="log-uniform",
         help="KSM pages per batch"),
    Knob("ksm.sleep_millisecs", kind="int", low=10, high=1000, prior="log-uniform",
         help="KSM sleep between batches, ms"),
    Knob("ksm.max_page_sharing", kind="int", low=2, high=4096, prior="log-uniform",
         help="most mappings of one KSM page"),
    Knob("ksm.use_zero_pages", kind="categorical", categories=(0, 1), help="map zero pages to the zero page"),
    Knob("ksm.smart_scan", kind="categorical", categories=(0, 1), help="skip pages that did not merge"),
)

METRICS = (
    ("memtune_ksmd_run", "gauge", "ksmd running (node_exporter node_ksmd_run).", ()),
    ("memtune_ksmd_pages_to_scan", "gauge", "Pages per ksmd batch (node_ksmd_pages_to_scan).", ()),
    ("memtune_ksmd_sleep_seconds", "gauge", "ksmd sleep between batches (node_ksmd_sleep_seconds).", ()),
    (
        "memtune_ksmd_merge_across_nodes",
        "gauge",
        "KSM merge_across_nodes (node_ksmd_merge_across_nodes).",
        (),
    ),
    ("memtune_ksmd_full_scans_total", "counter", "Full KSM scans (node_ksmd_full_scans_total).", ()),
    ("memtune_ksmd_pages_shared", "gauge", "KSM pages in use, 4 KiB pages (node_ksmd_pages_shared).", ()),
    (
        "memtune_ksmd_pages_sharing",
        "gauge",
        "Further mappings of KSM pages: pages saved (node_ksmd_pages_sharing).",
        (),
    ),
    (
        "memtune_ksmd_pages_unshared",
        "gauge",
        "Pages waiting in the unstable tree (node_ksmd_pages_unshared).",
        (),
    ),
    (
        "memtune_ksmd_pages_volatile",
        "gauge",
        "Pages changing too fast to be put in a tree (node_ksmd_pages_volatile).",
        (),
    ),
    (
        "memtune_ksmd_ksm_zero_pages",
        "gauge",
        "Pages mapped to the zero page by use_zero_pages (ksm_zero_pages).",
        (),
    ),
    ("memtune_ksmd_pages_scanned_total", "counter", "Pages ksmd visited (sysfs pages_scanned).", ()),
    (
        "memtune_ksmd_pages_skipped_total",
        "counter",
        "Pages smart_scan passed over (sysfs pages_skipped).",
        (),
    ),
    (
        "memtune_ksmd_general_profit_bytes",
        "gauge",
        "Memory saved by KSM minus its rmap_items (sysfs general_profit).",
        (),
    ),
)


def mode(settings: Mapping[str, Any]) -> str:
    """The sharing mode a scenario's or host's settings choose."""
    return str(settings.get("memtune.sharing", "tps"))
