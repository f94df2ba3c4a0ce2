"""The QEMU test bed's guest files, without QEMU: the initramfs archive and the module order."""

from __future__ import annotations

from pathlib import Path

import pytest

from memtune.live.qemu_guest import Newc, build_initramfs, module_order


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc archive (the kernel's reader, in short)."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name_at = pos + 110
        name = data[name_at:name_at + namesize - 1].decode()
        body = name_at + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data[body:body + size])
        pos = body + size + (-size % 4)


def _ko(path: Path, depends: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF junk\x00license=GPL\x00depends=" + depends.encode() + b"\x00name=x\x00")


def test_modules_load_after_what_they_depend_on(tmp_path):
    _ko(tmp_path / "drivers/virtio/virtio.ko", "")
    _ko(tmp_path / "drivers/virtio/virtio_ring.ko", "virtio")
    _ko(tmp_path / "drivers/virtio/virtio_pci.ko", "virtio_ring,virtio")
    _ko(tmp_path / "drivers/virtio/virtio_balloon.ko", "virtio_ring,virtio")
    names = [p.name for p in module_order(tmp_path)]
    assert names == ["virtio.ko", "virtio_ring.ko", "virtio_pci.ko", "virtio_balloon.ko"]
    with pytest.raises(FileNotFoundError, match="virtio_mem"):
        module_order(tmp_path, ("virtio_mem",))


def test_initramfs_is_a_newc_archive_with_init_busybox_and_modules(tmp_path):
    _ko(tmp_path / "mods/virtio.ko", "")
    _ko(tmp_path / "mods/virtio_pci.ko", "virtio")
    _ko(tmp_path / "mods/virtio_balloon.ko", "virtio")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF" + bytes(range(256)) * 3)
    files = read_newc(build_initramfs(busybox, tmp_path / "mods", keep_mib=32))
    assert files["bin/busybox"] == (0o100755, busybox.read_bytes())
    mode, init = files["init"]
    assert mode == 0o100755 and init.startswith(b"#!/bin/busybox sh") and b"keep=32" in init
    assert files["modules.order"][1].split() == [b"virtio.ko", b"virtio_pci.ko", b"virtio_balloon.ko"]
    assert files["bin"][0] == 0o040755


def test_newc_pads_names_and_data_to_four_bytes():
    a = Newc()
    a.file("x", b"abc")
    data = a.bytes()
    assert len(data) % 4 == 0 and read_newc(data) == {"x": (0o100644, b"abc")}
