"""``memtune profile``: measure a workload profile from real memory (processes or memory images)."""

from __future__ import annotations

import click

from memtune.cli.common import duration_option, echo_json
from memtune.cli.params import SEED, Int
from memtune.errors import UserError


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}#{seen[n]}")
        else:
            seen[n] = 1
            out.append(n)
    return out


@click.command("profile")
@click.option("--pid", "pids", type=Int(1), multiple=True, metavar="PID",
              help="Profile a live process (repeatable).")
@click.option("--image", "images", multiple=True, metavar="FILE",
              help="Profile a raw memory image: concatenated 4 KiB pages (repeatable).")
@click.option("--sample", type=float, default=1.0, show_default=True,
              help="Share of non-zero pages compressed to estimate compressibility (0 < f <= 1).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the sample.")
@click.option("--wss", "wss_interval", metavar="DURATION",
              help="Measure each process's working set over this interval first (e.g. 10s).")
@click.option("--wss-points", type=Int(1, 10000), default=10, show_default=True,
              help="Points of the touched-memory curve over the --wss interval.")
@click.option("--compressor", type=click.Choice(["lz4", "zstd"]), default="lz4", show_default=True,
              help="Compressor whose size classes go into the workload table.")
@click.option("--out", "out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the profile as TOML (a scenario workload can say profile = \"FILE\").")
@click.option("--scenario-out", "scenario_out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write a scenario of --vms VMs like the sources, with the content they share as "
                   "[[content_group]] tables (the sharing-degree distribution).")
@click.option("--vms", "n_vms", type=click.IntRange(1, 10000), default=None,
              help="VMs in the --scenario-out scenario (default: one per source).")
@click.option("--json", "as_json", is_flag=True, help="Print the full measurement as JSON.")
def cli(pids, images, sample, seed, wss_interval, wss_points, compressor, out, scenario_out, n_vms, as_json):
    """Count zero, duplicate and shareable pages and measure compressibility of real memory.

    Give processes (--pid) or memory images (--image), not both. Counts are exact over every page;
    compressibility is estimated from a --sample of the non-zero pages, with 95 % intervals.
    """
    from memtune.profile import (
        ImageSource,
        ProcessSource,
        Profiler,
        measure_wss,
        profile_document,
        write_profile,
    )

    if not pids and not images:
        raise UserError("give at least one --pid or --image")
    if pids and images:
        raise UserError("profile processes or images, not both in one profile", field="--image")
    if not 0.0 < sample <= 1.0:
        raise UserError(f"must be within (0, 1], got {sample}", field="--sample")
    interval = duration_option(wss_interval, "--wss")
    if interval is not None and images:
        raise UserError("a working set can only be measured on live processes (--pid)", field="--wss")
    if pids:
        sources = [ProcessSource(p) for p in pids]
    else:
        names = _unique_names([ImageSource(p).name for p in images])
        sources = [ImageSource(p, n) for p, n in zip(images, names, strict=True)]
    wss = None
    if interval is not None:
        by_pid = measure_wss([s.pid for s in sources], interval, wss_points)
        wss = {s.name: by_pid[s.pid] for s in sources}
    prof = Profiler(sample=sample, seed=seed)
    for s in sources:
        prof.add(s)
    result = prof.result()
    if wss:
        result["wss"] = wss
    doc = (
        profile_document(result, compressor=compressor, wss=wss)
        if out or scenario_out or not as_json
        else None
    )
    if out:
        write_profile(out, doc)
    if scenario_out:
        from memtune.profile.writer import scenario_document, write_scenario

        write_scenario(scenario_out, scenario_document(result, doc, vms=n_vms or len(sources)))
    if as_json:
        echo_json(result)
    else:
        click.echo(format_profile(result, doc, compressor))
        if out:
            click.echo(f"profile written to {out}")
        if scenario_out:
            click.echo(f"scenario written to {scenario_out}")


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def format_profile(result: dict, doc: dict | None, compressor: str) -> str:
    """A readable summary: one row per source, one for all sources together."""
    lines = [
        f"{'source':<20} {'pages':>10} {'zero':>7} {'shareable':>9} {'dup':>7} {'unique':>7} "
        f"{'<=1K':>6} {'<=2K':>6} {'<=3K':>6} {'ratio':>6}"
    ]

    def row(name, pages, zero, shareable, dup, comp):
        c = comp.get(compressor, {})
        cum = c.get("cumulative")
        tail = (
            f"{_pct(cum['le_1k']):>6} {_pct(cum['le_2k']):>6} {_pct(cum['le_3k']):>6} {c['ratio']:6.2f}"
            if cum
            else f"{'-':>6} {'-':>6} {'-':>6} {'-':>6}"
        )
        p = max(pages, 1)
        return (
            f"{name[:20]:<20} {pages:>10} {_pct(zero / p):>7} {_pct(shareable / p):>9} {_pct(dup / p):>7} "
            f"{_pct((pages - zero - shareable - dup) / p):>7} {tail}"
        )

    for s in result["sources"]:
        lines.append(row(s["name"], s["pages"], s["zero"], s["shareable"], s["duplicate"], s["compress"]))
    a = result["across"]
    lines.append(
        row(
            "(all)",
            a["pages"],
            a["zero"],
            a["cross_source_pages"],
            sum(s["duplicate"] for s in result["sources"]),
            a["compress"],
        )
    )
    lines.append(
        f"KSM (salting 0): pages_shared {a['ksm_pages_shared']}, pages_sharing {a['ksm_pages_sharing']} "
        f"(saves {a['saved_bytes_salting0'] / 2**20:.1f} MiB; inside each source only: "
        f"{a['saved_bytes_salting2'] / 2**20:.1f} MiB)"
    )
    c = a["compress"].get(compressor, {})
    if c.get("sampled"):
        lo, hi = c["cumulative_interval"]["le_2k"]
        exact = result["sample_fraction"] >= 1.0
        lines.append(
            f"{compressor}: {c['sampled']} of {c['nonzero_pages']} non-zero pages compressed; "
            f"<= 2 KiB (kept by ESX compression): {_pct(c['kept_by_esx']).strip()}"
            + ("" if exact else f" (95 % interval {_pct(lo).strip()} .. {_pct(hi).strip()})")
            + f"; ratio {c['ratio']:.2f}"
        )
    for name, w in (result.get("wss") or {}).items():
        lines.append(
            f"working set {name}: {w['touched'] / 2**20:.1f} MiB touched in {w['interval']:g} s "
            f"(hot, first {w['seconds'][0]:g} s: {w['hot'] / 2**20:.1f} MiB)"
        )
    if doc:
        for note in doc["profile"]["notes"]:
            lines.append(f"note: {note}")
    return "\n".join(lines)
