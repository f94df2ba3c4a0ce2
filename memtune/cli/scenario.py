"""``memtune scenario list|show NAME``."""

from __future__ import annotations

import click

from memtune.core.scenario import builtin_names, builtin_text, load_scenario
from memtune.units import format_duration, format_size


@click.group("scenario")
def cli() -> None:
    """Built-in scenarios."""


@cli.command("list")
def list_cmd() -> None:
    """List built-in scenarios with a one-line description."""
    for name in builtin_names():
        sc = load_scenario(name)
        total = sum(v.memory for v in sc.vms)
        click.echo(f"{name:<14} {len(sc.vms):>4} VMs  host {format_size(sc.host.memory):>8}  "
                   f"configured {format_size(total):>9}  {format_duration(sc.duration):>5}  {sc.description}")


@cli.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Print a built-in scenario's TOML (a starting point for your own)."""
    if name not in builtin_names():
        raise click.UsageError(f"no built-in scenario {name!r} (built-in: {', '.join(builtin_names())})")
    click.echo(builtin_text(name), nl=False)
