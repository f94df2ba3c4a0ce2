"""A QEMU/TCG test bed for the balloon: one guest with a real virtio-balloon, driven over QMP.

``python -m memtune.live.qemu [--kernel DIR] [--memory MiB] [--balloon MiB]`` (root; see docs/live.md)
boots a stock Debian kernel with the busybox initramfs of :mod:`memtune.live.qemu_guest` under TCG
(software emulation: ``/dev/kvm`` may be absent or unusable), waits until the guest has written and
freed its free memory (so it is backed on the host), inflates the balloon by ``--balloon`` MiB with
QMP ``balloon``, and measures what the model assumes of a balloon: the target is honoured (QMP
``query-balloon``), the guest's free memory shrinks by the balloon (virtio-balloon guest stats and the
guest's ``/proc/meminfo``), and the host gets the memory back (the QEMU process's RSS). Inflate and
deflate times are emulation's, not a VM's. The QEMU process is the run's own (recorded in the live undo
log, killed on exit and on signals); the QMP socket is a Unix socket; the guest has no network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from memtune.live.qemu_guest import FREE_LINE, READY, build_initramfs
from memtune.live.state import HostError, HostState

MiB = 2**20
KERNEL_DIR = Path(os.environ.get("MEMTUNE_QEMU_KERNEL", "/var/cache/memtune/qemu-kernel"))


def unavailable(kernel_dir: Path = KERNEL_DIR) -> str | None:
    """Why the test bed cannot run here (None if it can)."""
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not found (Debian package qemu-system-x86)"
    if shutil.which("busybox") is None:
        return "busybox not found (Debian package busybox-static)"
    if not list(kernel_dir.glob("boot/vmlinuz-*")):
        return f"no guest kernel in {kernel_dir} (python -m memtune.live.qemu --fetch-kernel)"
    return None


def fetch_kernel(dest: Path = KERNEL_DIR) -> Path:
    """Download Debian's current ``linux-image-amd64`` package and unpack it into ``dest`` (not installed)."""
    def run(cmd: list[str], cwd: str | None = None) -> str:
        try:
            return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            raise HostError(f"{' '.join(cmd)} failed: {detail.strip().splitlines()[-1]}") from None

    dest.mkdir(parents=True, exist_ok=True)
    dep = run(["apt-cache", "depends", "linux-image-amd64"])
    pkg = next((line.split()[-1] for line in dep.splitlines() if "Depends: linux-image-" in line), None)
    if pkg is None:
        raise HostError("apt-cache knows no kernel package behind linux-image-amd64 (apt-get update?)")
    with tempfile.TemporaryDirectory() as tmp:
        run(["apt-get", "download", pkg], cwd=tmp)
        run(["dpkg-deb", "-x", str(next(Path(tmp).glob("*.deb"))), str(dest)])
    return dest


class QMP:
    """A QMP client on a Unix socket (events are read past and dropped)."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise HostError(f"no QMP socket at {path}") from None
                time.sleep(0.1)
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())             # greeting
        self("qmp_capabilities")

    def __call__(self, command: str, **arguments: Any) -> Any:
        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "event" in msg:
                continue
            if "error" in msg:
                raise HostError(f"QMP {command}: {msg['error'].get('desc')}")
            return msg["return"]

    def close(self) -> None:
        self.sock.close()


class Guest:
    """One QEMU guest of the test bed; start with :meth:`boot`, stop with :meth:`stop`."""

    def __init__(
        self, st: HostState, kernel_dir: Path, memory_mib: int, workdir: Path, fill: bool = True
    ) -> None:
        self.st, self.memory_mib, self.dir, self.fill = st, memory_mib, workdir, fill
        self.kernel = sorted(kernel_dir.glob("boot/vmlinuz-*"))[-1]
        self.moddir = sorted(kernel_dir.glob("lib/modules/*"))[-1]
        self.free_kb: list[int] = []
        self.ready = threading.Event()

    def boot(self, timeout: float = 240.0) -> float:
        """Start QEMU and wait until the guest is ready; returns the seconds it took."""
        initrd = self.dir / "initramfs.cpio"
        keep = 24 if self.fill else 1 << 20          # MiB of free memory left unwritten
        initrd.write_bytes(build_initramfs(Path(shutil.which("busybox") or "busybox"), self.moddir, keep))
        qmp = self.dir / "qmp.sock"
        cmd = ["qemu-system-x86_64", "-machine", "pc,accel=tcg,mem-merge=off", "-m", f"{self.memory_mib}M",
               "-smp", "1", "-nic", "none", "-display", "none", "-monitor", "none", "-no-reboot",
               "-kernel", str(self.kernel), "-initrd", str(initrd),
               "-append", "console=ttyS0 quiet panic=-1", "-serial", "stdio",
               "-qmp", f"unix:{qmp},server=on,wait=off",
               "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=off"]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.st.add_worker(self.proc.pid)
        threading.Thread(target=self._console, daemon=True).start()
        self.qmp = QMP(qmp)
        if not self.ready.wait(timeout):
            raise HostError(f"the guest was not ready within {timeout:g} s")
        return time.monotonic() - t0

    def _console(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = FREE_LINE.search(line)
            if m:
                self.free_kb.append(int(m.group(1)))
            if READY in line:
                self.ready.set()

    def rss(self) -> int:
        """Resident bytes of the QEMU process (guest RAM it backs plus its own)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise HostError("QEMU exited")

    def set_balloon(self, guest_bytes: int, timeout: float = 120.0) -> float:
        """Ask for ``guest_bytes`` of guest memory (QMP ``balloon``); seconds until it is actual."""
        t0 = time.monotonic()
        self.qmp("balloon", value=int(guest_bytes))
        while self.qmp("query-balloon")["actual"] != guest_bytes:
            if time.monotonic() - t0 > timeout:
                raise HostError(f"balloon did not reach {guest_bytes} bytes within {timeout:g} s")
            time.sleep(0.05)
        return time.monotonic() - t0

    def guest_stats(self) -> dict[str, int]:
        return self.qmp("qom-get", path="/machine/peripheral/balloon0", property="guest-stats")["stats"]

    def settle_free(self, seconds: float = 2.5) -> int:
        """The guest's MemFree (bytes) once it has printed it twice since now."""
        n = len(self.free_kb)
        deadline = time.monotonic() + 30
        while len(self.free_kb) < n + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.free_kb[-1] * 1024

    def stop(self) -> None:
        with suppress(HostError, OSError, ValueError):
            self.qmp("quit")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def balloon_check(st: HostState, kernel_dir: Path = KERNEL_DIR, memory_mib: int = 256,
                  balloon_mib: int = 128, fill: bool = True) -> dict[str, Any]:
    """Boot the guest, inflate the balloon by ``balloon_mib``, deflate it; what each side shows.
    ``fill``: the guest writes and frees its free memory first (else it stays never touched)."""
    work = Path(tempfile.mkdtemp(prefix="memtune-qemu-"))
    st.record("file", path=str(work))
    g = Guest(st, kernel_dir, memory_mib, work, fill)
    try:
        boot = g.boot()
        g.qmp("qom-set", path="/machine/peripheral/balloon0", property="guest-stats-polling-interval",
              value=1)
        free0, rss0 = g.settle_free(), g.rss()
        inflate = g.set_balloon((memory_mib - balloon_mib) * MiB)
        free1, rss1 = g.settle_free(), g.rss()
        stats = g.guest_stats()
        deflate = g.set_balloon(memory_mib * MiB)
        free2, rss2 = g.settle_free(), g.rss()
    finally:
        g.stop()
    return {"memory_mib": memory_mib, "balloon_mib": balloon_mib, "filled": fill, "boot_s": boot,
            "inflate_s": inflate, "deflate_s": deflate,
            "guest_free": [free0, free1, free2], "qemu_rss": [rss0, rss1, rss2],
            "guest_free_drop_ratio": (free0 - free1) / (balloon_mib * MiB),
            "host_rss_drop_ratio": (rss0 - rss1) / (balloon_mib * MiB),
            "guest_stats_after_inflate": stats}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memtune.live.qemu", description=__doc__.splitlines()[0])
    p.add_argument("--kernel", type=Path, default=KERNEL_DIR, help="unpacked linux-image package")
    p.add_argument("--memory", type=int, default=256, help="guest memory, MiB")
    p.add_argument("--balloon", type=int, default=128, help="balloon to inflate, MiB")
    p.add_argument("--fetch-kernel", action="store_true",
                   help="download and unpack Debian's kernel into --kernel, then exit")
    p.add_argument("--no-fill", action="store_true", help="leave the guest's free memory never touched")
    a = p.parse_args(argv)
    if not 64 <= a.memory <= 4096 or not 0 < a.balloon < a.memory - 48:
        p.error("need 64 <= --memory <= 4096 and 0 < --balloon < --memory - 48")
    from memtune.live.lock import host_lock
    from memtune.live.state import opened_state

    try:
        if a.fetch_kernel:
            print(fetch_kernel(a.kernel))
            return 0
        reason = unavailable(a.kernel) or (None if os.geteuid() == 0 else "needs root")
        if reason:
            raise HostError(f"QEMU test bed: {reason}")
        with host_lock(600), opened_state() as st:
            out = balloon_check(st, a.kernel, a.memory, a.balloon, not a.no_fill)
    except HostError as exc:
        print(f"memtune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
