"""zswap, the kernel's compressed cache in front of swap (Documentation/admin-guide/mm/zswap.rst).

zswap compresses pages on their way to a swap device and keeps them in a RAM pool; a page that
does not compress well enough (``accept_threshold_percent``), or does not fit the pool
(``max_pool_percent`` of *total* RAM), goes to the swap device. It needs an active swap device.

Parameters (``/sys/module/zswap/parameters``) are written through the run's undo log, so each is
restored as found; ``enabled`` is written last (and restored first). Statistics come from
``/proc/meminfo`` (``Zswap``: pool size, ``Zswapped``: data stored), ``/proc/vmstat`` (``zswpin``,
``zswpout``, ``zswpwb``) and, where debugfs is mounted, ``/sys/kernel/debug/zswap/*`` (rejections,
pool-limit hits, stored pages); :func:`mount_debugfs` mounts debugfs only if it is not mounted,
and the undo log unmounts what it mounted.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

from memtune.live.state import HostError, HostState, sysfs_read

PARAMS = Path("/sys/module/zswap/parameters")
DEBUGFS = Path("/sys/kernel/debug")
KNOBS = ("compressor", "max_pool_percent", "accept_threshold_percent", "shrinker_enabled", "enabled")
BOOLEAN = ("enabled", "shrinker_enabled")
VMSTAT = ("zswpin", "zswpout", "zswpwb")


def available() -> str | None:
    """None if this kernel has zswap, else the reason."""
    return None if (PARAMS / "enabled").exists() else f"no zswap here ({PARAMS} missing)"


def params() -> dict[str, str]:
    """Every zswap parameter as the kernel shows it (``Y``/``N`` for booleans)."""
    return {p.name: p.read_text().strip() for p in sorted(PARAMS.glob("*")) if p.is_file()}


def compressors(crypto: Path = Path("/proc/crypto")) -> list[str]:
    """Compression algorithms the crypto API offers now (a missing one may still load as a module)."""
    out: list[str] = []
    name = None
    for line in crypto.read_text().splitlines():
        key, _, value = (x.strip() for x in line.partition(":"))
        if key == "name":
            name = value
        elif key == "type" and value in ("compression", "acomp", "scomp") and name not in out:
            out.append(str(name))
    return sorted(out)


def _value(name: str, value: object) -> str:
    if name in BOOLEAN:
        return "Y" if value in (True, 1, "1", "Y", "y") else "N"
    return str(value)


def configure(st: HostState, **knobs: object) -> None:
    """Set zswap parameters (names as in sysfs; ``enabled=True``); each old value is saved first.

    ``enabled`` goes last, so zswap starts with the new compressor and pool limit. An unknown
    parameter or a compressor the kernel refuses is a :class:`HostError` naming it."""
    reason = available()
    if reason:
        raise HostError(reason)
    for name in knobs:
        if name not in KNOBS:
            raise HostError(f"unknown zswap parameter {name!r} (one of {', '.join(KNOBS)})")
    for name in sorted(knobs, key=KNOBS.index):
        path = PARAMS / name
        value = _value(name, knobs[name])
        if not path.exists() or sysfs_read(str(path)) == value:
            continue
        try:
            st.write_sysfs(str(path), value)
        except OSError as exc:
            offered = f" (offered: {', '.join(compressors())})" if name == "compressor" else ""
            raise HostError(f"zswap {name}={value} refused: {exc.strerror or exc}{offered}",
                            source=str(path)) from None


def pool_percent(cache_bytes: int, meminfo: Path = Path("/proc/meminfo")) -> int:
    """``max_pool_percent`` for a pool of ``cache_bytes``: whole percents of total RAM, at least 1
    (so a scaled cache of a few MiB on a large machine can only be bounded from above)."""
    total = _meminfo(meminfo)["MemTotal"]
    return max(1, min(100, math.ceil(100 * cache_bytes / total)))


def _meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        f = rest.split()
        if f:
            out[key] = int(f[0]) * (1024 if len(f) > 1 and f[1] == "kB" else 1)
    return out


def _vmstat(path: Path = Path("/proc/vmstat")) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def debugfs_mounted(mounts: Path = Path("/proc/mounts")) -> bool:
    return any(f[1] == str(DEBUGFS) and f[2] == "debugfs"
               for f in (line.split() for line in mounts.read_text().splitlines()) if len(f) > 2)


def mount_debugfs(st: HostState) -> bool:
    """Mount debugfs at /sys/kernel/debug unless it is mounted (recorded: unmounted on restore);
    returns whether zswap's debugfs statistics can be read."""
    if not debugfs_mounted():
        if not DEBUGFS.is_dir():
            return False
        st.record("mount", path=str(DEBUGFS), fstype="debugfs")
        done = subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], capture_output=True)
        if done.returncode != 0:        # nothing mounted: nothing to undo
            st.entries.pop()
            st.save()
            return False
    return (DEBUGFS / "zswap").is_dir()


def stats() -> dict[str, int]:
    """zswap now: ``pool_bytes`` (RAM the pool takes, meminfo Zswap), ``stored_bytes`` (data it holds,
    meminfo Zswapped), the vmstat counters (pages) and every debugfs counter where readable."""
    m = _meminfo()
    v = _vmstat()
    out = {"pool_bytes": m.get("Zswap", 0), "stored_bytes": m.get("Zswapped", 0)}
    out.update({k: v.get(k, 0) for k in VMSTAT})
    d = DEBUGFS / "zswap"
    if d.is_dir():
        for p in sorted(d.iterdir()):
            try:
                out[p.name] = int(p.read_text())
            except (OSError, ValueError):
                continue
    return out


def enabled() -> bool:
    return available() is None and sysfs_read(str(PARAMS / "enabled")) == "Y"
