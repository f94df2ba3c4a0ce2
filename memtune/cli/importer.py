"""``memtune import``: build scenarios from measurements taken on real hosts."""

from __future__ import annotations

import click

from memtune.errors import UserError
from memtune.units import parse_size


@click.group("import")
def cli() -> None:
    """Turn measurements from real hosts into scenarios."""


@cli.command("esxtop")
@click.argument("csv_file", metavar="FILE.csv")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the scenario here (default: print it).")
@click.option(
    "--host-memory", metavar="SIZE", help="Host memory if the capture lacks Memory\\Machine MBytes."
)
@click.option("--name", help="Scenario name (default: the CSV file's stem).")
def esxtop(csv_file, out, host_memory, name):
    """Scenario from an `esxtop -b` batch CSV: one VM per memory group, workloads fitted to the
    touched-memory series (constant, phased or diurnal). What was used, skipped or missing is
    reported on stderr and kept as comments in the scenario."""
    from memtune.importers.esxtop import to_scenario, write_scenario
    from memtune.importers.esxtop_csv import read_batch_csv

    mem = None
    if host_memory is not None:
        try:
            mem = parse_size(host_memory)
        except ValueError as exc:
            raise UserError(str(exc), field="--host-memory") from None
    cap = read_batch_csv(csv_file)
    data, report, observed = to_scenario(cap, host_memory=mem, name=name)
    text = write_scenario(out, data, report, observed)
    for line in report:
        click.echo(line, err=True)
    if out:
        click.echo(f"scenario written to {out} ({len(data['vm'])} VMs)", err=True)
    else:
        click.echo(text, nl=False)
