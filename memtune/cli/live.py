"""``memtune live``: the real-host driver's housekeeping (see docs/live.md).

``memtune live cleanup`` undoes what a live run changed (cgroups, KSM/zram/cgroup values, swap
devices, files, workers it started) from the state file, e.g. after the run was killed with
SIGKILL. ``memtune live status`` says whether this host can run live and what is left behind.
"""

from __future__ import annotations

import click

from memtune.live.lock import LOCK_PATH, host_lock
from memtune.live.safety import unavailable
from memtune.live.state import STATE_FILE, HostError, HostState


@click.group("live")
def cli() -> None:
    """Run memtune against this Linux host: housekeeping."""


@cli.command("cleanup")
@click.option("--wait", default=10.0, show_default=True, metavar="SECONDS",
              help="Wait this long for a running live run to release the host lock.")
def cleanup(wait: float) -> None:
    """Undo every change a killed live run left behind (from /run/memtune-live/state.json)."""
    reason = unavailable()
    if reason and "root" in reason:
        raise HostError(reason)
    with host_lock(wait):
        st = HostState.load(STATE_FILE)
        if not st.entries:
            click.echo("nothing to clean up")
            return
        n = len(st.entries)
        errors = st.restore()
    if errors:
        raise HostError("could not undo: " + "; ".join(errors), source=str(STATE_FILE))
    click.echo(f"undid {n} change(s) left by live run pid {st.owner}")


@cli.command("status")
def status() -> None:
    """Can this host run live, and did a run leave anything behind?"""
    reason = unavailable()
    click.echo(f"live runs: {'possible' if reason is None else 'not possible: ' + reason}")
    st = HostState.load(STATE_FILE)
    click.echo(
        f"left behind: {len(st.entries)} change(s)" + (" (memtune live cleanup)" if st.entries else "")
    )
    click.echo(f"host lock: {LOCK_PATH}")
