"""``memtune simulate``: run a scenario and print the per-VM esxtop-like table."""

from __future__ import annotations

import click

from memtune.cli.common import Progress, duration_option, echo_json, plugin_options, scenario_arg
from memtune.cli.params import SEED
from memtune.core.report_text import format_result


@click.command("simulate")
@click.argument("scenario", required=False)
@click.option("--policy", "policy_ref", metavar="POLICY", help="Policy file or preset to apply.")
@click.option("--duration", help="Simulated time, e.g. 30m (default: the scenario's).")
@click.option("--seed", type=SEED, help="Random seed (default: the scenario's).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--metrics-out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the final state as Prometheus text (node_exporter textfile collector).")
@click.option("--timeline/--no-timeline", default=False, help="Keep the timeline in --json output.")
@click.option("--audit-log", type=click.Path(dir_okay=False), metavar="FILE",
              help="Append the tamper-evident audit log to FILE (sets audit.log; see `memtune audit`).")
@plugin_options
def cli(scenario, policy_ref, duration, seed, as_json, metrics_out, timeline, audit_log, disable, plugins):
    """Run SCENARIO (a built-in name or a TOML file; default: small) and report per VM."""
    from memtune.core.engine import Engine
    from memtune.core.simulation import build_host

    sc = scenario_arg(scenario)
    if policy_ref:
        from memtune.policies import apply_policy, load_policy

        sc = apply_policy(load_policy(policy_ref), sc)
    if audit_log:
        sc = sc.replace(settings={**sc.settings, "audit.log": audit_log})
    sc = sc.with_duration(duration_option(duration))
    host = build_host(sc, seed=seed, disable=disable, plugins=plugins)
    engine = Engine(host)
    bar = Progress(f"simulating {sc.name}")
    try:
        result = engine.run(progress=bar)
    finally:
        bar.close()
    if metrics_out:
        from memtune.metrics.textfile import write_textfile

        write_textfile(host, metrics_out)
    if as_json:
        if not timeline:
            result = {k: v for k, v in result.items() if k != "timeline"}
        echo_json(result)
    else:
        click.echo(format_result(result))
