"""``memtune calibrate``: measure this machine's fault, copy, decompression and device costs."""

from __future__ import annotations

from pathlib import Path

import click

from memtune.errors import UserError


@click.command("calibrate")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the [settings] table here (default: print it).")
@click.option(
    "--device",
    metavar="PATH",
    help="Measure 4 KiB random reads here: a directory (a scratch file is made), a file or a block device.",
)
@click.option(
    "--role",
    type=click.Choice(["ssd", "hdd", "host-cache"]),
    default="ssd",
    show_default=True,
    help="Which swap-in latency the --device measurement sets (datastore SSD/HDD or host swap cache).",
)
@click.option(
    "--repeats",
    type=click.IntRange(1, 100),
    default=5,
    show_default=True,
    help="Runs per measurement (the fastest is kept).",
)
@click.option(
    "--reads",
    type=click.IntRange(10, 100000),
    default=500,
    show_default=True,
    help="Random reads on --device.",
)
def cli(out, device, role, repeats, reads):
    """Measure the latency model's costs on this machine and write them as scenario [settings]."""
    from memtune.calibrate import calibrate, render

    cal = calibrate(device, role, repeats=repeats, reads=reads)
    text = render(cal)
    if out:
        try:
            Path(out).write_text(text)
        except OSError as exc:
            raise UserError(f"cannot write: {exc.strerror}", source=out) from None
        click.echo(text.split("\n\n", 1)[0])
        click.echo(f"settings written to {out}")
    else:
        click.echo(text, nl=False)
