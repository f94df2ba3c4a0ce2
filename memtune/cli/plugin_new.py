"""``memtune plugin new NAME``: scaffold a third-party plugin package."""

from __future__ import annotations

import click


@click.group("plugin")
def cli() -> None:
    """Write third-party plugins (see docs/plugins.md)."""


@cli.command("new")
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to create the package in.")
def new(name: str, directory: str) -> None:
    """Create memtune-NAME/: a pyproject with the `memtune` entry point, a module with one hook
    implementation and a test using memtune.testing."""
    from memtune.scaffold import create, render

    root = create(name, directory)
    for rel in sorted(render(name)):
        click.echo(f"created {root / rel}")
    click.echo(f"next: pip install -e {root} && memtune plugins && pytest {root}")
