"""``memtune schema scenario|policy``: the JSON Schema of a file kind, for editors to complete and check."""

from __future__ import annotations

import json

import click

from memtune.schema import KINDS


@click.command("schema")
@click.argument("kind", type=click.Choice(KINDS))
def cli(kind: str) -> None:
    """Print the JSON Schema of a scenario or policy file (TOML files map onto it one to one; e.g.
    taplo or Even Better TOML: `#:schema ./scenario.schema.json` on a file's first line)."""
    from memtune.schema import json_schema

    click.echo(json.dumps(json_schema(kind), indent=2, ensure_ascii=False))
