"""A metrics :class:`~memtune.metrics.model.Snapshot` of the real host, built each control tick.

The simulator's exporter renders a ``Snapshot`` of its host; a live run fills the same dataclass
from what the kernel and the workers report, so both expose the same ``memtune_*`` families and
labels through the same renderer, and one set of dashboards shows either (docs/metrics.md, "A real
host"). What has no per-VM counterpart on Linux is apportioned by a stated rule or exported as NaN,
never as a number the host did not produce:

- compressed / swapped per VM: the cgroup's ``swap`` (memory.stat) split by the host's share of
  swapped data held compressed (zram ``orig_data_size`` + zswap ``Zswapped``) versus on the swap
  file; the compression cache likewise (zram ``mem_used_total`` + zswap pool);
- faults ``swapped`` / ``compressed``: the cgroup's ``pgmajfault`` split by the host's swap-ins
  from zram/zswap (zram reads, ``zswpin``) versus the swap file (``pswpin``);
- faults ``ballooned`` / ``guest_swapped``: the worker's guest swap-ins in a tick, ``ballooned``
  while its balloon did not shrink, else ``guest_swapped``;
- shared / merged per VM: the worker's pages KSM merged; saved and consumed split in the ratio
  ``pages_sharing : pages_shared`` (the shares sum to KSM's counters);
- NaN: zero pages shared without ``use_zero_pages``, COW breaks per VM, amounts of plugins the
  Linux driver has no mechanism for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memtune.core.registry import each_plugin
from memtune.core.report import vm_amounts
from memtune.live import zswap
from memtune.live.kernel_families import kernel_families
from memtune.live.ksm import KSM
from memtune.metrics.model import Snapshot
from memtune.plugin import host_counter, host_gauge, vm_gauge

if TYPE_CHECKING:
    from memtune.core.host import Host
    from memtune.live.observe import RunInfo, TickView

PAGE = 4096
NAN = float("nan")

# Families the simulator exports that a live run does not, and why (docs/metrics.md, "A real host").
NOT_MEASURED = {
    "memtune_vm_cow_breaks_total": "KSM counts COW breaks host-wide only (vmstat cow_ksm)",
    "memtune_vm_tps_scanned_pages_total": "ksmd counts pages scanned host-wide only",
    "memtune_vm_tps_shared_pages_total": "ksmd counts pages merged host-wide only",
    "memtune_vm_ksm_merged_pages_total": "ksmd counts pages merged host-wide only",
    "memtune_vm_swap_out_bytes_total": "cgroup v1 memory.stat has no per-cgroup swap-out count",
    "memtune_vm_swap_out_pages_total": "cgroup v1 memory.stat has no per-cgroup swap-out count",
    "memtune_vm_compression_bytes_total": "cgroup v1 memory.stat has no per-cgroup zswap/zram store count",
    "memtune_vm_encrypted_swap_in_pages_total": "the Linux driver encrypts nothing",
}


def _vmstat() -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in Path("/proc/vmstat").read_text().splitlines())}


def _zram_read_pages(dev: str | None) -> int:
    """Pages read back from the zram device (``stat`` field 3 is sectors of 512 bytes)."""
    if not dev:
        return 0
    return int(Path(f"/sys/block/{Path(dev).name}/stat").read_text().split()[2]) // 8


def host_swap(info: RunInfo, view: TickView) -> dict[str, float]:
    """Host-wide swap figures: data held compressed, the cache holding it, data on the swap file,
    and the swap-in counters (pages) they are split by."""
    s = view.sample
    z = zswap.stats() if zswap.enabled() else {}
    stored = float(s.zram.get("orig_data_size", 0) + z.get("stored_bytes", 0))
    cache = float(s.zram.get("mem_used_total", 0) + z.get("pool_bytes", 0))
    on_file = float(s.swaps.get(info.swap_file or "", {}).get("used", 0)) - z.get("stored_bytes", 0)
    vm = _vmstat()
    comp_in = _zram_read_pages(info.zram) + vm.get("zswpin", 0)
    return {"stored": stored, "cache": cache, "file": max(on_file, 0.0),
            "comp_in": float(comp_in), "all_in": float(vm.get("pswpin", 0) + vm.get("zswpin", 0))}


@dataclass
class Counters:
    """What a live snapshot keeps between ticks: counter bases (reset at the end of the warm-up, as
    the model's counters), balloon movement, ticks."""

    ticks: int = 0
    warm: bool = False
    base: dict[str, np.ndarray] = field(default_factory=dict)
    host_base: dict[str, float] = field(default_factory=dict)
    inflated: np.ndarray | None = None
    deflated: np.ndarray | None = None
    by_kind: dict[str, np.ndarray] = field(default_factory=dict)
    last_balloon: np.ndarray | None = None
    last_gin: np.ndarray | None = None

    def advance(
        self, info: RunInfo, view: TickView, raw: dict[str, np.ndarray], host: dict[str, float]
    ) -> None:
        n = len(view.ctl)
        self.ticks += 1
        balloon, gin = raw["ballooned"], raw["guest_swap_ins"]
        warm_now = view.now >= info.model.scenario.warmup
        if self.inflated is None or (warm_now and not self.warm):
            self.warm = warm_now
            self.base = {k: v.copy() for k, v in raw.items()}
            self.host_base = dict(host)
            self.inflated, self.deflated = np.zeros(n), np.zeros(n)
            self.by_kind = {"ballooned": np.zeros(n), "guest_swapped": np.zeros(n)}
        else:
            moved = balloon - self.last_balloon
            self.inflated += np.maximum(moved, 0) * PAGE
            self.deflated += np.maximum(-moved, 0) * PAGE
            ins = np.maximum(gin - self.last_gin, 0)
            self.by_kind["ballooned"] += np.where(moved >= 0, ins, 0)
            self.by_kind["guest_swapped"] += np.where(moved < 0, ins, 0)
        self.last_balloon, self.last_gin = balloon.copy(), gin.copy()

    def since(self, raw: dict[str, np.ndarray], key: str) -> np.ndarray:
        return np.maximum(raw[key] - self.base[key], 0)


def _raw(view: TickView) -> dict[str, np.ndarray]:
    ctl = view.ctl
    return {
        "ballooned": np.array([c["ballooned"] for c in ctl], dtype=np.float64),
        "guest_swap_ins": np.array([c["guest_swap_ins"] for c in ctl], dtype=np.float64),
        "guest_swap_outs": np.array([c["guest_swap_outs"] for c in ctl], dtype=np.float64),
        "first_touches": np.array([c["first_touches"] for c in ctl], dtype=np.float64),
        "pgmajfault": np.array([g.get("pgmajfault", 0) for g in view.cgroups], dtype=np.float64),
    }


def _sharing(info: RunInfo, view: TickView) -> dict[str, np.ndarray]:
    """Per VM: guest memory KSM merged, and its split into saved and consumed frames."""
    s = view.sample
    resident = np.array([c["resident"] for c in view.ctl], dtype=np.float64) * PAGE
    held = np.array(s.held, dtype=np.float64)
    merged = np.maximum(resident - held, 0.0)
    frames, sharing = s.ksm.get("pages_shared", 0), s.ksm.get("pages_sharing", 0)
    consumed = merged * (frames / (frames + sharing)) if frames + sharing else np.zeros_like(merged)
    zero = 0.0 if not _ksm_knob("use_zero_pages") else NAN    # zero pages KSM maps to the zero page
    return {"merged": merged, "saved": merged - consumed, "consumed": consumed,
            "zero": np.full(len(merged), zero), "held": held, "resident": resident}


def _ksm_knob(name: str) -> float:
    try:
        return float((KSM / name).read_text())
    except (OSError, ValueError):
        return NAN


def live_amounts(
    info: RunInfo, view: TickView, host: dict[str, float], keys: list[str]
) -> dict[str, np.ndarray]:
    """The model's per-VM amounts (``vm_amounts`` keys, bytes) measured on the real host."""
    h, c = info.model, info.controller
    n = h.nvm
    sh = _sharing(info, view)
    zeros = np.zeros(n)
    swap = np.array([g.get("swap", 0) for g in view.cgroups], dtype=np.float64)
    share = host["stored"] / (host["stored"] + host["file"]) if host["stored"] + host["file"] else 0.0
    compressed = swap * share
    cache = compressed * (host["cache"] / host["stored"]) if host["stored"] else zeros
    ctl = view.ctl
    outs = np.array([x["guest_swap_outs"] - x["guest_swap_ins"] - (x["ballooned"] - x["free_taken"])
                     for x in ctl], dtype=np.float64)
    powered = np.array([v not in view.killed for v in range(n)])
    active = np.array([x["active_ppm"] / 1e6 for x in ctl])
    mode = info.sharing
    live = {
        "memsz": h.vm_pages * float(h.page_bytes),
        "target": np.asarray(c.target, dtype=np.float64) * PAGE,
        "granted": sh["resident"],
        "consumed": sh["held"] + sh["consumed"],
        "active": active * h.vm_pages * float(h.page_bytes) * powered,
        "resident": sh["held"],
        "overhead": np.array(info.baseline, dtype=np.float64) * powered,
        "ballooned": np.array([x["ballooned"] for x in ctl], dtype=np.float64) * PAGE,
        "balloon_max": np.asarray(c.cap, dtype=np.float64) * PAGE,
        "guest_swapped": np.maximum(outs, 0) * PAGE,
        "swapped": swap - compressed,
        "compressed": compressed,
        "compression_cache": cache,
        "compression_saved": compressed - cache,
        "swap_host_cache": zeros,       # Linux has no host swap cache (ESX's LLSWAP)
        "shared": sh["merged"] if mode == "tps" else zeros,
        "shared_saved": sh["saved"] if mode == "tps" else zeros,
        "shared_consumed": sh["consumed"] if mode == "tps" else zeros,
        "zero": sh["zero"] if mode == "tps" else zeros,
        "merged": sh["merged"] if mode == "ksm" else zeros,
        "merged_saved": sh["saved"] if mode == "ksm" else zeros,
        "merged_zero": sh["zero"] if mode == "ksm" else zeros,
    }
    return {k: np.asarray(live.get(k, np.full(n, NAN)), dtype=np.float64) for k in keys}


def live_faults(view: TickView, acc: Counters, raw: dict[str, np.ndarray], host: dict[str, float],
                kinds: list[str]) -> dict[str, np.ndarray]:
    """Faults per kind since the warm-up (see the module docstring for the splits)."""
    n = len(view.ctl)
    major = acc.since(raw, "pgmajfault")
    comp_in = host["comp_in"] - acc.host_base.get("comp_in", 0.0)
    all_in = host["all_in"] - acc.host_base.get("all_in", 0.0)
    share = comp_in / all_in if all_in > 0 else 0.0
    got = {"free": acc.since(raw, "first_touches"), "compressed": major * share,
           "swapped": major * (1 - share), **acc.by_kind}
    return {k: got.get(k, np.full(n, NAN)) for k in kinds}


def live_counters(acc: Counters, raw: dict[str, np.ndarray], faults: dict[str, np.ndarray],
                  plugins: set[str]) -> dict[str, np.ndarray]:
    """The plugins' per-VM counters (``host.count`` names) that a live run measures."""
    out: dict[str, np.ndarray] = {}
    if "balloon" in plugins:
        out["balloon_inflated_bytes"] = acc.inflated
        out["balloon_deflated_bytes"] = acc.deflated
        out["guest_swap_in_bytes"] = acc.since(raw, "guest_swap_ins") * PAGE
        out["guest_swap_out_bytes"] = acc.since(raw, "guest_swap_outs") * PAGE
    if "swap" in plugins and "swapped" in faults:
        out["swap_in_pages"] = faults["swapped"]
        out["swap_in_bytes"] = faults["swapped"] * PAGE
    if "compression" in plugins and "compressed" in faults:
        out["decompression_bytes"] = faults["compressed"] * PAGE
    return out


MAPPED_PLUGINS = ("tps", "ksm", "encryption")   # plugins whose own families a live run fills


def declared_families(model: Host) -> dict[str, tuple[str, str, str]]:
    """name -> (plugin, type, help) of every family the model host's plugins declare."""
    got: dict[str, tuple[str, str, str]] = {}
    each_plugin(model.pm, "memtune_register_metrics", lambda owner: {
        "register": lambda n, t, d, _l=(), _o=owner: got.setdefault(n, (_o, t, d))})
    return got


def unmapped_families(model: Host) -> list[str]:
    """Families declared by plugins the Linux driver has no mechanism for (not exported live)."""
    return sorted(n for n, (owner, _, _) in declared_families(model).items() if owner not in MAPPED_PLUGINS)


def plugin_families(
    info: RunInfo, view: TickView, declared: dict[str, tuple[str, str, str]]
) -> list[tuple[str, Any]]:
    """The plugin families the model exports, from the kernel's counters (KSM sysfs, as
    node_exporter's ksmd collector); families of mechanisms the Linux driver lacks are left out."""
    k = view.sample.ksm
    out: list[tuple[str, Any]] = []

    def add(owner: str, name: str, value: float) -> None:
        _, kind, doc = declared[name]
        if kind == "counter":
            fam = host_counter(name.removesuffix("_total"), doc, value)
        else:
            fam = host_gauge(name, doc, value)
        out.append((owner, fam))

    if info.sharing == "tps":
        add("tps", "memtune_tps_pages_shared", k.get("pages_shared", 0))
        add("tps", "memtune_tps_pages_sharing", k.get("pages_sharing", 0))
    elif info.sharing == "ksm":
        for name in (n for n in declared if n.startswith("memtune_ksmd_")):
            key = name.removeprefix("memtune_ksmd_").removesuffix("_total").removesuffix("_bytes")
            value = _ksm_knob("sleep_millisecs") / 1000 if key == "sleep_seconds" else _ksm_knob(key)
            add("ksm", name, value)
    if "memtune_encryption_encrypted" in declared:   # the Linux driver encrypts nothing
        out.append(("encryption", vm_gauge("memtune_encryption_encrypted", declared[
            "memtune_encryption_encrypted"][2], list(info.model.vm_names), np.zeros(info.model.nvm))))
    return out


# report columns plugins add once they run (the model host of a live run is never run)
PLUGIN_COLUMNS = {"balloon": ("balloon_max",), "compression": ("compression_cache", "compression_saved"),
                  "swap": ("swap_host_cache",)}
SHARING_COLUMNS = {"tps": ("shared_saved", "shared_consumed", "zero"), "ksm": ("merged_saved", "merged_zero")}


def amount_keys(info: RunInfo, plugins: set[str]) -> list[str]:
    """The per-VM amounts the model reports for this run: page states and plugins' columns."""
    keys = list(vm_amounts(info.model))
    for plugin, cols in PLUGIN_COLUMNS.items():
        keys += [c for c in cols if plugin in plugins and c not in keys]
    keys += [c for c in SHARING_COLUMNS.get(info.sharing or "", ()) if c not in keys]
    return keys


class LiveSnapshots:
    """Builds one :class:`Snapshot` per tick of a live run (keeps the counters' bases between ticks)."""

    def __init__(self, info: RunInfo, host_reader: Any = None) -> None:
        h = info.model
        self.info = info
        self.host_reader = host_reader or host_swap     # tests hand in their own host figures
        self.acc = Counters()
        self.keys = amount_keys(info, set(h.pm.plugin_names()))
        self.plugins = set(h.pm.plugin_names())
        kinds = {"free"} | ({"ballooned", "guest_swapped"} if "balloon" in self.plugins else set())
        kinds |= {"swapped"} if "swap" in self.plugins else set()
        kinds |= {"compressed"} if "compression" in self.plugins else set()
        kinds |= {"shared"} if info.sharing == "tps" else set()
        self.kinds = sorted(kinds)
        self.declared = declared_families(h)

    def build(self, view: TickView) -> Snapshot:
        info, h, c = self.info, self.info.model, self.info.controller
        raw = _raw(view)
        host = self.host_reader(info, view)
        self.acc.advance(info, view, raw, host)
        lat = np.array(view.latency) if view.latency else np.zeros((h.nvm, 3 + h.book.hist.shape[1]))
        faults = live_faults(view, self.acc, raw, host, self.kinds)
        # the frames behind shared pages, in the pool the model's sharing plugin keeps them in
        pools = {info.sharing: float(view.sample.ksm.get("pages_shared", 0) * PAGE)} if info.sharing else {}
        powered = np.array([v not in view.killed for v in range(h.nvm)])
        pb = float(h.page_bytes)
        return Snapshot(
            scenario=h.scenario.name, seed=int(h.seed), now=float(view.now), ticks=self.acc.ticks,
            memory=float(h.memory), free=float(c.capacity - view.sample.used), min_free=float(c.min_free),
            overhead=float(view.sample.other), reserved=float((h.reservation * pb)[powered].sum()),
            state=int(c.state), time_in_state=np.array(c.time_in_state, dtype=np.float64),
            large_pages_broken=False,          # the workers map 4 KiB pages only
            host_pools=pools,
            settings={k: float(v) for k, v in h.settings.items()
                      if isinstance(v, int | float) and not isinstance(v, str)},
            vm_names=list(h.vm_names), powered=powered, reservation=h.reservation * pb, limit=h.limit * pb,
            shares=np.array(h.shares, dtype=np.float64),
            active_estimate=np.array([x["active_ppm"] / 1e6 for x in view.ctl]),
            amounts=live_amounts(info, view, host, self.keys),
            touches=lat[:, 0], extra=lat[:, 1], stall=lat[:, 1].copy(), running=lat[:, 2], hist=lat[:, 3:],
            faults=faults, counters=live_counters(self.acc, raw, faults, self.plugins),
            plugin_families=plugin_families(info, view, self.declared) + kernel_families(info, view),
        )
