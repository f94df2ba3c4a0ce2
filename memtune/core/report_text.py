"""Plain-text rendering of a run report: an esxtop-like per-VM table and a host summary."""

from __future__ import annotations

from typing import Any

from memtune.units import format_duration

COLUMNS = (
    ("VM", "name", None),
    ("MEMSZ", "memsz", "g"),
    ("TARGET", "target", "g"),
    ("GRANT", "granted", "g"),
    ("CONSUMED", "consumed", "g"),
    ("ACTIVE", "active", "g"),
    ("SHRD", "shared", "g"),
    ("SHRDSVD", "shared_saved", "g"),
    ("MCTL", "ballooned", "g"),
    ("ZIP", "compressed", "g"),
    ("SWCUR", "swapped", "g"),
    ("MEAN", "mean_latency", "t"),
    ("P99", "p99_latency", "t"),
    ("STALL%", "stall", "%"),
)


def _cell(value: Any, kind: str | None) -> str:
    if kind is None:
        return str(value)
    if value is None:
        return "-"
    if kind == "g":
        return f"{value / 2**30:.2f}"
    if kind == "t":
        return format_duration(value)
    return f"{100 * value:.1f}"


def format_result(result: dict[str, Any]) -> str:
    """The report as a table: sizes in GiB, latencies with units, stall in percent."""
    rows = [[h for h, _, _ in COLUMNS]]
    for vm in result["vms"]:
        rows.append([_cell(vm.get(key), kind) for _, key, kind in COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for j, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    h = result["host"]
    gib = 2**30
    tis = ", ".join(f"{k} {v:.0f}s" for k, v in h["time_in_state"].items() if v > 0)
    lines += [
        "",
        f"host {result['scenario']}: memory {h['memory'] / gib:.1f} GiB, "
        f"minFree {h['min_free'] / 2**20:.0f} MiB, "
        f"free {h['free'] / gib:.2f} GiB, overhead {h['overhead'] / gib:.2f} GiB, state {h['state']}",
        f"states visited: {', '.join(h['states_visited'])}; time in state: {tis or '-'}",
        f"extra latency per touch: mean {format_duration(h['mean_latency'])}, "
        f"p99 {format_duration(h['p99_latency'])}; stall {100 * h['stall']:.2f}%",
        f"sizes in GiB; {result['duration']:.0f} s simulated (statistics after {result['warmup']:.0f} s "
        f"warm-up), "
        f"seed {result['seed']}, plugins: {', '.join(result['plugins'])}",
    ]
    return "\n".join(lines)
