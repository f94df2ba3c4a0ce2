"""``memtune serve``: run a scenario in scaled real time and serve its metrics on /metrics."""

from __future__ import annotations

import signal
import threading

import click

from memtune.cli.common import duration_option, plugin_options, scenario_arg
from memtune.cli.params import PORT, SEED, PositiveFloat
from memtune.metrics.model import LATENCY_BUCKET_MODES
from memtune.metrics.server import DEFAULT_BIND, DEFAULT_PORT


@click.command("serve")
@click.argument("scenario", required=False)
@click.option("--policy", "policy_ref", metavar="POLICY", help="Policy file or preset to apply.")
@click.option("--speed", type=PositiveFloat(), default=1.0, show_default=True,
              help="Simulated seconds per wall-clock second.")
@click.option("--port", type=PORT, default=DEFAULT_PORT, show_default=True,
              help="TCP port for /metrics (0: any free port, printed on stderr).")
@click.option("--bind", default=DEFAULT_BIND, show_default=True,
              help="Address to listen on (loopback by default; the exposition has no authentication).")
@click.option("--loop/--once", default=True, show_default=True,
              help="Start the scenario over when it ends, or stop (and exit) at its end.")
@click.option("--hold", is_flag=True,
              help="With --once: keep serving the final state after the run ends, until interrupted.")
@click.option("--duration", help="Simulated time per run, e.g. 30m (default: the scenario's).")
@click.option(
    "--seed", type=SEED, help="Random seed (default: the scenario's; run n of a loop uses seed + n)."
)
@click.option(
    "--latency-buckets",
    type=click.Choice(LATENCY_BUCKET_MODES),
    default="full",
    show_default=True,
    help="Buckets of the per-VM latency histogram: full (33 series per VM), coarse (one per decade, "
    "12 per VM) or off (none).",
)
@plugin_options
def cli(
    scenario, policy_ref, speed, port, bind, loop, hold, duration, seed, latency_buckets, disable, plugins
):
    """Simulate SCENARIO (default: small) in real time x SPEED and serve Prometheus metrics.

    Exits 0 on SIGINT/SIGTERM (or, with --once, when the run ends) after closing the server.
    """
    from memtune.metrics.server import start_metrics_server

    sc, dur = _scenario_and_duration(scenario, policy_ref, duration)
    sim, registry = _start_simulation(sc, dur, seed, speed, loop, latency_buckets, disable, plugins)
    try:
        server, server_thread = start_metrics_server(registry, port, bind)
    except BaseException:
        sim.stop()
        sim.join(10)
        raise
    real_port = server.server_address[1]
    click.echo(
        f"memtune serve: {sc.name} at {speed:g}x, metrics on http://{bind}:{real_port}/metrics", err=True
    )
    _serve_until_stopped(sim, server, server_thread, hold)
    if sim.error is not None:
        raise sim.error
    click.echo(f"memtune serve: stopped after {sim.runs} run(s)", err=True)


def _scenario_and_duration(scenario: str | None, policy_ref: str | None, duration: str | None):
    """The scenario (with the policy applied) and the simulated time of one run (> 0)."""
    sc = scenario_arg(scenario)
    if policy_ref:
        from memtune.policies import apply_policy, load_policy

        sc = apply_policy(load_policy(policy_ref), sc)
    sc = sc.with_duration(duration_option(duration))
    return sc, sc.duration


def _start_simulation(sc, dur: float, seed: int | None, speed: float, loop: bool, latency_buckets: str,
                      disable, plugins):
    """Start the simulation thread (run n at seed + n) and the registry it fills; returns once the
    plugins are configured, so the first scrape sees them. The first host is built here, so
    scenario mistakes fail before anything runs."""
    from memtune.core.simulation import build_host
    from memtune.metrics.collector import RunHandle, host_registry
    from memtune.metrics.server import SimulationThread

    base_seed = sc.seed if seed is None else seed

    def make_host(run: int):
        return build_host(sc, seed=base_seed + run, disable=disable, plugins=plugins)

    first = make_host(0)

    def factory(run: int):
        return first if run == 0 else make_host(run)

    handle = RunHandle()
    registry = host_registry(handle, latency_buckets=latency_buckets, process=True)
    sim = SimulationThread(
        handle,
        factory,
        duration=dur,
        tick=sc.tick,
        speed=speed,
        loop=loop,
        after_step=registry.host_collector.prepare,
    )
    sim.start()
    sim.started.wait()
    return sim, registry


def _serve_until_stopped(sim, server, server_thread, hold: bool) -> None:
    """Serve until SIGINT/SIGTERM, or the run's end (with --hold, the end of a failed run only);
    then stop the simulation and the server and restore the signal handlers."""
    from memtune.metrics.server import stop_metrics_server

    stop = threading.Event()
    old = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # --hold keeps serving the final state after a --once run (not after a failed one)
        while not stop.is_set() and not (sim.finished.is_set() and not (hold and sim.error is None)):
            stop.wait(0.2)
    finally:
        sim.stop()
        sim.join(10)
        stop_metrics_server(server, server_thread)
        for s, h in old.items():
            signal.signal(s, h)
