"""Memory encryption (AMD SEV style): per-VM keys defeat sharing and compression and cost time.

With SEV each VM's memory is encrypted by the memory controller with a key of its own and an
address tweak (AMD Memory Encryption white paper, Kaplan, Powell, Woller 2016), so:

- the hypervisor sees ciphertext: two VMs holding the same plaintext (or one VM holding it at two
  addresses) show different bytes, so no page of an encrypted VM can be shared, not even a zero
  page; this plugin gives every page of an encrypted VM unique content when the host is
  configured (writes keep it unique: the core gives written pages unique content);
- ciphertext does not compress: every page gets the worst compression class (3, > 3 KiB);
- every DRAM access pays the AES engine's extra latency (``encryption.access_overhead_pct`` of
  ``latency.dram``);
- a page the hypervisor swaps must be re-encrypted for the swap device and decrypted on the way
  back (with SEV through the firmware's SEND/RECEIVE_UPDATE_DATA transport-key path): each
  swap-in pays ``latency.encrypted_swap_in`` on top of the device latency (``memtune_fault_latency``
  on pages of the ``swapped`` state, looked up by name; nothing happens if swap is disabled).
  Real KVM pins SEV guests' memory and never swaps it; ESX and this model allow it at a price.

The plugin knows nothing about the tps, compression or swap plugins beyond the page-state name
``swapped``: it changes page content and compression class, which any sharing or compression
technique reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memtune.plugin import Host, Setting, hookimpl, settings_hook, unique_content, vm_gauge

NAME = "encryption"
CIPHERTEXT_ZCLASS = 3          # "worse": does not compress to 3 KiB

SETTINGS = (
    Setting("encryption.access_overhead_pct", "float", 5.0,
            "Extra latency of every memory access of an encrypted VM, percent of latency.dram.",
            "AMD Memory Encryption white paper (Kaplan et al. 2016): the AES engine adds a few "
            "cycles to each DRAM access; SEV measurements (Mofrad et al., HASP 2018; Akram et al., "
            "IPDPS 2021) report single-digit-percent slowdowns on memory-bound work; 5 % is a model "
            "choice in that range", minimum=0.0, maximum=100.0),
    Setting("latency.encrypted_swap_in", "seconds", 1e-6,
            "Decrypt/re-encrypt cost per page of an encrypted VM swapped in by the hypervisor.",
            "AES-128 over 4 KiB at ~4 GB/s per core with AES-NI: ~1 us per page (Gueron, Intel "
            "AES-NI white paper, 2010)"),
)


memtune_register_settings = settings_hook(SETTINGS)


@hookimpl
def memtune_register_metrics(register: Any) -> None:
    register("memtune_encryption_encrypted", "gauge", "1 if the VM's memory is encrypted, else 0.", ("vm",))


@hookimpl
def memtune_configure(host: Host) -> None:
    """Give every page of an encrypted VM ciphertext: unique content, incompressible."""
    pg = host.pages
    enc = np.flatnonzero(host.encrypted)
    if enc.size:
        starts, counts = pg.base[enc], pg.npages[enc]
        total = int(counts.sum())
        pages = np.repeat(starts, counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
        pg.content[pages] = unique_content(pages)
        pg.zclass[pages] = CIPHERTEXT_ZCLASS
    host.plugin_data[NAME] = {"swapped": host.states.code("swapped")}


@hookimpl
def memtune_access_overhead(host: Host) -> np.ndarray | None:
    """Every touch of an encrypted VM pays the memory controller's AES latency."""
    if not host.encrypted.any():
        return None
    extra = host.settings["encryption.access_overhead_pct"] / 100.0 * host.settings["latency.dram"]
    return np.where(host.encrypted, extra, 0.0)


@hookimpl
def memtune_fault_latency(
    host: Host, state: int, pages: np.ndarray, latency: np.ndarray
) -> np.ndarray | None:
    """Swap-ins of encrypted VMs' pages pay the per-page crypto cost."""
    data = host.plugin_data.get(NAME)
    if data is None or data["swapped"] is None or state != data["swapped"] or not host.encrypted.any():
        return None
    enc = host.encrypted[host.pages.vm[pages]]
    if not enc.any():
        return None
    host.count_per_vm(
        "encrypted_swap_in_pages",
        np.bincount(host.pages.vm[pages[enc]], minlength=host.nvm) * float(host.page_scale),
    )
    return np.where(enc, float(host.settings["latency.encrypted_swap_in"]), 0.0)


@hookimpl
def memtune_collect_metrics(host: Host) -> list | None:
    return [
        vm_gauge(
            "memtune_encryption_encrypted",
            "1 if the VM's memory is encrypted, else 0.",
            host.vm_names,
            host.encrypted,
        )
    ]
