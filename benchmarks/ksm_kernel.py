"""Run real Linux KSM on known pages and record its convergence curve (for the KSM test and benchmark).

Child processes map anonymous memory, mark it ``MADV_MERGEABLE`` (and ``MADV_NOHUGEPAGE``, so every
page is a 4 KiB page KSM can merge without splitting), fill it with a known content mix and wait. The
parent then sets the KSM knobs, starts ksmd (``run=1``) and samples the sysfs counters until the
expected sharing is reached or a timeout. The run holds the host lock and writes sysfs through the
undo log of ``memtune.live`` (``host_lock``, ``opened_state``: every value saved on first write and
restored at exit, on SIGINT/SIGTERM/SIGHUP, or by ``memtune live cleanup`` after a SIGKILL). ksmd is
told to unmerge (``run=2``) before the children are killed; the children also exit when the parent
dies (their stdin closes). KSM is left as found.

Safety rules (docs/model.md, "Linux KSM"): the run refuses to start (returns a reason) if KSM is
missing, not writable, already running, or holds merged pages of someone else.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

KSM = Path("/sys/kernel/mm/ksm")
KNOBS = ("pages_to_scan", "sleep_millisecs", "max_page_sharing", "use_zero_pages", "smart_scan",
         "advisor_mode", "run")
COUNTERS = ("full_scans", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
            "pages_scanned", "ksm_zero_pages", "general_profit")

# The child: map, advise, fill page j with its content key (8 bytes, then a filler from the key;
# key 0 is an all-zero page), report ready, wait for stdin to close.
CHILD = r"""
import mmap, sys, numpy as np
keys = np.frombuffer(sys.stdin.buffer.read(int(sys.argv[1]) * 8), dtype='<i8')
n = keys.size
m = mmap.mmap(-1, n * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_NOHUGEPAGE)
m.madvise(mmap.MADV_MERGEABLE)
a = np.frombuffer(m, dtype=np.uint64).reshape(n, 512)
k = keys.astype(np.uint64)
fill = (k[:, None] * np.uint64(0x9E3779B97F4A7C15)) ^ np.arange(512, dtype=np.uint64)[None, :]
fill[keys == 0] = 0
a[:] = fill
sys.stdout.write('ready\n'); sys.stdout.flush()
sys.stdin.read()
"""


def unavailable() -> str | None:
    """Why real KSM cannot be used here, or None."""
    if not (KSM / "run").exists():
        return f"no KSM at {KSM} (kernel without CONFIG_KSM)"
    if os.geteuid() != 0 or not os.access(KSM / "run", os.W_OK):
        return f"{KSM} is not writable (needs root)"
    try:
        import mmap
        mmap.MADV_MERGEABLE  # noqa: B018 - attribute check
    except AttributeError:
        return "this Python has no mmap.MADV_MERGEABLE"
    return None


def read_counters() -> dict[str, int]:
    return {c: int((KSM / c).read_text()) for c in COUNTERS if (KSM / c).exists()}


def _knob_value(name: str) -> str:
    raw = (KSM / name).read_text().strip()
    if "[" in raw:                        # advisor_mode: "[none] scan-time"
        return raw[raw.index("[") + 1: raw.index("]")]
    return raw


def _write(name: str, value: object) -> None:
    (KSM / name).write_text(f"{value}\n")


def busy() -> str | None:
    """Why KSM looks in use by someone else."""
    if _knob_value("run") == "1":
        return "KSM is already running (run=1)"
    c = read_counters()
    if c.get("pages_shared") or c.get("pages_sharing"):
        return f"KSM holds merged pages of other processes (pages_sharing={c['pages_sharing']})"
    return None


def run_kernel(keys_per_process: list, knobs: dict[str, int], *, timeout: float = 60.0,
               every: float = 0.05, settle: float = 1.0, expect_sharing: int | None = None) -> dict:
    """Merge the pages ``keys_per_process`` (int64 arrays, one per child) with real KSM.

    Returns ``{"samples": [[t, counters...]], "columns": [...], "knobs": ..., "skipped": reason}``;
    ``t`` is seconds since ``run=1``. Sampling stops ``settle`` s after ``pages_sharing`` reaches
    ``expect_sharing`` (or stops changing for 3 full scans), or at ``timeout``.
    """
    why = unavailable()
    if why:
        return {"skipped": why}
    from memtune.live.lock import host_lock
    from memtune.live.state import opened_state

    with host_lock(timeout=600.0):
        why = busy()
        if why:
            return {"skipped": why}
        saved = {k: _knob_value(k) for k in KNOBS if (KSM / k).exists()}
        with opened_state() as st:
            st.write_sysfs(str(KSM / "run"), 0)
            for k, v in knobs.items():
                if (KSM / k).exists() and _knob_value(k) != str(v):
                    st.write_sysfs(str(KSM / k), v)
            samples = _sample(st, keys_per_process, timeout, every, settle, expect_sharing)
        return {"columns": ["t", *COUNTERS], "samples": samples, "knobs": dict(knobs), "restored": saved}


def _sample(st, keys_per_process: list, timeout: float, every: float, settle: float,
            expect_sharing: int | None) -> list:
    import numpy as np

    procs: list[subprocess.Popen] = []
    try:
        for keys in keys_per_process:
            keys = np.asarray(keys, dtype="<i8")
            p = subprocess.Popen([sys.executable, "-c", CHILD, str(keys.size)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
            p.stdin.write(keys.tobytes())
            p.stdin.flush()
            procs.append(p)
        for p in procs:
            if p.stdout.readline().strip() != b"ready":
                raise RuntimeError("a KSM test child failed to start")
        base = read_counters()
        t0 = time.monotonic()
        st.write_sysfs(str(KSM / "run"), 1)
        samples = []
        done_at = None
        last_change = (0, 0)
        while True:
            t = time.monotonic() - t0
            c = read_counters()
            samples.append(
                [round(t, 4)]
                + [
                    c.get(n, 0) - (base.get(n, 0) if n in ("full_scans", "pages_scanned") else 0)
                    for n in COUNTERS
                ]
            )
            sharing, scans = c.get("pages_sharing", 0), c.get("full_scans", 0) - base.get("full_scans", 0)
            if sharing != last_change[0]:
                last_change = (sharing, scans)
            if done_at is None and (
                (expect_sharing is not None and sharing >= expect_sharing)
                or (scans - last_change[1] >= 3 and scans >= 3)
            ):
                done_at = t
            if (done_at is not None and t - done_at >= settle) or t > timeout:
                return samples
            time.sleep(every)
    finally:
        st.write_sysfs(str(KSM / "run"), 2)  # unmerge before the children go: no stale KSM pages
        for p in procs:
            with contextlib.suppress(Exception):
                p.stdin.close()
            p.kill()
            p.wait()
