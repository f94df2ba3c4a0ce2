"""``memtune audit``: check and read the tamper-evident audit log a run wrote (``audit.log``).

Exit codes: ``verify`` exits 0 for an intact log and 1 when it finds a broken record -- that is a
finding about the log, not a usage error, so scripts can tell "tampered" (1) from "could not check"
(2: missing or unreadable file, unreadable key file, a keyed log and no key).
"""

from __future__ import annotations

import json

import click

from memtune.errors import UserError
from memtune.units import format_size, parse_duration


@click.group("audit")
def cli() -> None:
    """Verify or show an audit log (written when the setting audit.log is set)."""


@cli.command("verify")
@click.argument("log", metavar="LOG")
@click.option("--key-file", metavar="FILE", help="HMAC key file (default: $MEMTUNE_AUDIT_KEY if set).")
@click.pass_context
def verify_cmd(ctx: click.Context, log: str, key_file: str | None) -> None:
    """Check LOG's hash chain: exit 0 and a summary if intact, with what that proves (without a key:
    only that nobody edited it without re-hashing, see docs/audit.md); exit 1 and the first broken
    record (line, seq, and whether it was edited, dropped, reordered, truncated, bad JSON or the
    wrong key).

    Exit 1 is a finding about the log, not a usage error; exit 2 means the check could not be made
    (missing or unreadable log or key file, or a keyed log and no key).
    """
    from memtune.audit import load_key, verify_file

    key = load_key(key_file, field="--key-file")
    verdict = verify_file(log, key)
    click.echo(verdict.summary(log))
    if not verdict.ok:
        ctx.exit(1)
    click.echo(verdict.proves())


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise UserError(str(exc), field="--since") from None


def _cell(key: str, value: object) -> str:
    if key.endswith("_bytes") and isinstance(value, int | float) and not isinstance(value, bool):
        return format_size(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


@cli.command("show")
@click.argument("log", metavar="LOG")
@click.option("--vm", "vm", metavar="NAME",
              help="Only records about this VM (its own, and host-wide ones with a per-VM table naming it).")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Only records of this kind (repeatable): policy, state-change, reclaim, share, cow-break, ...",
)
@click.option("--since", metavar="T", help="Only records at or after simulated time T (e.g. 90s, 5m).")
@click.option("--json", "as_json", is_flag=True, help="Print the matching records as JSON lines.")
def show_cmd(log: str, vm: str | None, kinds: tuple[str, ...], since: str | None, as_json: bool) -> None:
    """Print LOG's records (filtered) as a table. Does not check the chain: use `verify`."""
    from memtune.audit import filter_records, read_records

    records, bad = read_records(log)
    if bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        click.echo(
            f"memtune: warning: {log}: line {bad[0]}{more} is not an audit record; "
            "run `memtune audit verify`",
            err=True,
        )
    rows = list(filter_records(records, vm=vm, kinds=kinds, since=_since(since)))
    if as_json:
        for r in rows:
            click.echo(json.dumps(r.raw, sort_keys=True, separators=(",", ":")))
        return
    table = [("SEQ", "TIME", "KIND", "VM", "DATA")]
    for r in rows:
        data = " ".join(f"{k}={_cell(k, v)}" for k, v in sorted(r.data.items()))
        table.append((str(r.seq), f"{r.time:.10g}s", r.kind, r.vm or "-", data))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
