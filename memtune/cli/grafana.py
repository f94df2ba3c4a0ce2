"""``memtune grafana export DIR``: write the dashboards, provisioning, Prometheus rules and scrape
configuration that ship with memtune (package data) into DIR."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from memtune.errors import UserError


@click.group("grafana")
def cli() -> None:
    """Grafana dashboards and Prometheus rules for memtune's metrics."""


@cli.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace files in DIRECTORY that differ from memtune's.")
def export_cmd(directory: Path, force: bool) -> None:
    """Write dashboards/, provisioning/, rules/ and prometheus/ into DIRECTORY.

    A file that exists with other content is kept unless --force is given (exit 2 naming it).
    """
    from memtune.monitoring import files

    shipped = files()
    clash = [
        rel for rel, data in shipped if (directory / rel).is_file() and (directory / rel).read_bytes() != data
    ]
    if clash and not force:
        raise UserError(
            f"{len(clash)} file(s) exist with other content, e.g. {directory / clash[0]} "
            "(use --force to replace them)",
            source=str(directory),
        )
    for rel, data in shipped:
        write_atomic(directory / rel, data)
    click.echo(
        f"wrote {len(shipped)} files to {directory}: dashboards/ (import into Grafana, or provision "
        "with provisioning/), rules/memtune.rules.yml and prometheus/prometheus.yml (scrape jobs and "
        "rule_files) - see docs/metrics.md"
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
