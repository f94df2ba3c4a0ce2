"""Working-set size of live processes over an interval, from the kernel's referenced bits.

Method (Documentation/admin-guide/mm/soft-dirty.rst and proc.rst): writing ``1`` to
``/proc/PID/clear_refs`` clears the referenced (accessed) bit of every page of the process; the
``Referenced`` line of ``/proc/PID/smaps_rollup`` (or the sum over ``/proc/PID/smaps``) then counts
the memory touched since. Reading it at several moments of the interval without clearing again gives
the touched set as a function of the window length: pages touched within a short window are the hot
set, the growth after that is the cold part of the working set (the curve Denning's working-set
model W(t, tau) describes). Idle page tracking (``/sys/kernel/mm/page_idle``) would give the same per
page but needs PFNs; it is not used.

The interval is real time: the caller sleeps. Measuring is done before the contents are read,
because reading ``/proc/PID/mem`` marks pages accessed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from memtune.errors import UserError


def _referenced_kib(pid: int) -> int:
    for path in (f"/proc/{pid}/smaps_rollup", f"/proc/{pid}/smaps"):
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            if path.endswith("smaps"):
                raise UserError(
                    "process exited during the working-set interval", source=f"pid {pid}"
                ) from None
            continue
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}", source=f"pid {pid}") from None
        total = 0
        for line in text.splitlines():
            if line.startswith("Referenced:"):
                total += int(line.split()[1])
        return total
    return 0


def clear_refs(pid: int) -> None:
    """Clear the referenced bits of every page of ``pid``."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("1")
    except FileNotFoundError:
        raise UserError("no such process", source=f"pid {pid}") from None
    except OSError as exc:
        raise UserError(
            f"cannot clear referenced bits (/proc/{pid}/clear_refs): {exc.strerror}", source=f"pid {pid}"
        ) from None


def measure_wss(
    pids: Sequence[int], interval: float, points: int = 10, sleep: Callable[[float], None] = time.sleep
) -> dict[int, dict[str, Any]]:
    """Touched bytes of each process after ``interval/points``, ``2*interval/points`` ... ``interval``
    seconds since its referenced bits were cleared. Returns per pid ``{"seconds": [...],
    "touched_bytes": [...], "touched": bytes over the whole interval, "hot": bytes in the first
    window, "interval": seconds}``."""
    if interval <= 0:
        raise UserError("must be greater than zero", field="--wss")
    if points < 1:
        raise UserError("must be at least 1", field="--wss-points")
    for pid in pids:
        clear_refs(pid)
    start = time.monotonic()
    curves: dict[int, list[int]] = {pid: [] for pid in pids}
    seconds = []
    for j in range(1, points + 1):
        due = start + interval * j / points
        wait = due - time.monotonic()
        if wait > 0:
            sleep(wait)
        seconds.append(round(interval * j / points, 6))
        for pid in pids:
            curves[pid].append(_referenced_kib(pid) * 1024)
    return {
        pid: {"interval": interval, "seconds": seconds, "touched_bytes": c, "touched": c[-1], "hot": c[0]}
        for pid, c in curves.items()
    }
