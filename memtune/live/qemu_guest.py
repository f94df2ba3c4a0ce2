"""The guest of the QEMU test bed: a stock Debian kernel and a busybox initramfs, built from files.

The initramfs holds busybox (static), the kernel's virtio modules (loaded in dependency order, read
from each module's ``.modinfo`` ``depends=``) and ``/init``, a shell script: it fills the guest's
free memory with written pages and frees them again (so the guest's free memory is backed on the
host, as a guest's that has run a while), then prints its free memory on the serial console every
second. The archive is written in the kernel's ``newc`` cpio format
(Documentation/driver-api/early-userspace/buffer-format.rst), so no ``cpio`` tool is needed.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

GUEST_MODULES = ("virtio_pci", "virtio_balloon")
READY = "memtune-guest: ready"
FREE_LINE = re.compile(r"memtune-guest: MemFree: (\d+) kB")

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m || echo "memtune-guest: insmod $m failed"; done
mount -t tmpfs -o size=95% tmpfs /tmp
keep={keep_mib}
fill=$(awk -v k=$keep '/MemFree/ {{ print int($2 / 1024) - k }}' /proc/meminfo)
[ "$fill" -gt 0 ] && dd if=/dev/zero of=/tmp/fill bs=1M count=$fill 2>/dev/null
rm -f /tmp/fill
echo "memtune-guest: filled $fill MiB"
echo "{ready} $(grep MemFree /proc/meminfo | tr -s ' ')"
while true; do echo "memtune-guest: $(grep MemFree /proc/meminfo | tr -s ' ')"; sleep 1; done
"""


def module_deps(ko: Path) -> list[str]:
    """The modules ``ko`` depends on (its ``.modinfo`` ``depends=`` entry)."""
    m = re.search(rb"depends=([A-Za-z0-9_,-]*)\x00", ko.read_bytes())
    return [d for d in (m.group(1).decode().split(",") if m else []) if d]


def module_order(moddir: Path, names: tuple[str, ...] = GUEST_MODULES) -> list[Path]:
    """``names`` and everything they depend on, dependencies first."""
    found = {p.name.removesuffix(".ko"): p for p in moddir.rglob("*.ko")}
    order: list[Path] = []

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key not in found:
            raise FileNotFoundError(f"module {name}.ko not in {moddir}")
        if found[key] in order:
            return
        for dep in module_deps(found[key]):
            visit(dep)
        order.append(found[key])

    for n in names:
        visit(n)
    return order


class Newc:
    """A ``newc`` cpio archive in memory (directories, files, symlinks)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\x00"
        self.buf.write(head + b"\x00" * (-len(head) % 4))
        self.buf.write(data + b"\x00" * (-len(data) % 4))
        self.ino += 1

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(busybox: Path, moddir: Path, keep_mib: int = 24) -> bytes:
    """The guest's initramfs (see module docstring); ``keep_mib`` of free memory is left unwritten."""
    mods = module_order(moddir)
    a = Newc()
    for d in ("bin", "modules"):
        a.dir(d)
    a.file("bin/busybox", busybox.read_bytes(), 0o755)
    a.file("init", INIT.format(keep_mib=int(keep_mib), ready=READY).encode(), 0o755)
    a.file("modules.order", "\n".join(p.name for p in mods).encode() + b"\n")
    for p in mods:
        a.file(f"modules/{p.name}", p.read_bytes())
    return a.bytes()
