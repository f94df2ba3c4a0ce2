"""``memtune optimize``: search the policy knobs for the lowest stall / latency (see docs/tuner.md)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from memtune.cli.common import duration_option, plugin_options, scenario_arg
from memtune.cli.params import PORT, SEED, Choice, Int
from memtune.errors import UserError
from memtune.tuner.defaults import default


class _Bar:
    """click.progressbar on stderr: evaluations told, best objective so far, ETA."""

    def __init__(self, budget: int, fmt: Any) -> None:
        self.best = math.inf
        self.fmt = fmt
        self.bar = click.progressbar(length=budget, label="optimizing", file=sys.stderr, show_eta=True,
                                     show_pos=True, item_show_func=self._item)
        self.bar.__enter__()

    def _item(self, _: Any) -> str:
        return f"best {self.fmt(self.best)}" if math.isfinite(self.best) else "best -"

    def __call__(self, ev: Any, tuner: Any) -> None:
        if ev.feasible and ev.value is not None and ev.value < self.best:
            self.best = ev.value
        self.bar.update(1, ev)

    def skip(self, n: int, best: float | None) -> None:
        if best is not None:
            self.best = best
        if n:
            self.bar.update(n, None)

    def close(self) -> None:
        self.bar.__exit__(None, None, None)


@click.command("optimize")
@click.argument("scenario", required=False)
@click.option("--out", "out", default="memtune-out", show_default=True, metavar="DIR",
              help="Output directory: journal, best policy TOML, report.json, plots.")
@click.option("--resume", is_flag=True, help="Continue the run journaled in --out (a killed run).")
@click.option("--budget", type=Int(1), default=default("tuner.budget"), show_default=True,
              help="Evaluations (points told to the optimizer), infeasible ones included.")
@click.option("--time-limit", help="Stop asking for new batches after this wall time (e.g. 10m).")
@click.option("--patience", type=Int(1), help="Stop after this many evaluations without improvement.")
@click.option("--optimizer", type=Choice(["gp", "forest", "random", "tpe"]), default="gp", show_default=True,
              help="Gaussian process, extra trees, random search, or Optuna's TPE (needs optuna).")
@click.option("--objective", type=Choice(["stall", "mean-latency", "p99-latency", "weighted"]),
              default="stall", show_default=True, help="What to minimise (weighted mean over VMs).")
@click.option("--weight", "weights", multiple=True, metavar="NAME=W",
              help="Weight of a VM or VM group in the objective (repeatable; replaces share weights).")
@click.option("--slo-p99", help="SLO mode: minimise reserved memory with every VM's p99 extra latency "
                                "at most this (e.g. 20us).")
@click.option(
    "--knobs",
    "knobs",
    multiple=True,
    metavar="LIST",
    help="Tune only these knobs: comma-separated names or patterns (Mem.IdleTax, reservation, web.*).",
)
@click.option(
    "--fix",
    "fix",
    multiple=True,
    metavar="NAME=VALUE",
    help="Pin a knob or host setting (repeatable), e.g. Mem.IdleTax=75 or web.limit=1.",
)
@click.option(
    "--group",
    type=Choice(["prefix", "vm", "all"]),
    default="prefix",
    show_default=True,
    help="VMs sharing per-VM knobs: name without -NN suffix, each VM, or all VMs.",
)
@click.option(
    "--repeats",
    type=Int(1),
    default=default("tuner.repeats"),
    show_default=True,
    help="Simulations (seeds) per point.",
)
@click.option(
    "--batch",
    type=Int(1),
    default=default("tuner.batch"),
    show_default=True,
    help="Points asked at once (fixed, so results do not depend on --workers).",
)
@click.option(
    "--initial-points",
    type=Int(1),
    default=default("tuner.initial_points"),
    show_default=True,
    help="Latin-hypercube points before the model is used (rounded up to whole batches).",
)
@click.option("--duration", help="Simulated time per evaluation (default: the scenario's).")
@click.option(
    "--fidelity",
    type=Choice(["coarse", "full"]),
    default=default("tuner.fidelity"),
    show_default=True,
    help="Resolution of evaluations: coarse (simulated pages x2, about 20 % less CPU) or full; "
    "the report compares at full resolution either way.",
)
@click.option("--seed", type=SEED, help="Run seed (default: the scenario's).")
@click.option(
    "--workers",
    type=Int(1),
    default=default("tuner.workers"),
    show_default=True,
    help="Local worker processes (1: in this process).",
)
@click.option("--dask-scheduler", metavar="ADDRESS", help="Run evaluations on this Dask cluster instead.")
@click.option(
    "--presets",
    "presets",
    metavar="LIST",
    help="Presets to compare in the report (comma-separated; default: all).",
)
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG plots.")
@click.option(
    "--metrics-port", type=PORT, help="Serve tuner metrics for Prometheus on this port (0: any free port)."
)
@click.option("--metrics-bind", default="127.0.0.1", show_default=True, help="Address for --metrics-port.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr (default: on a terminal)."
)
@click.option(
    "--confirm",
    type=Choice(["live"]),
    help="Re-run the best policy and esxi-default on this Linux host "
    "(scaled; root) and report the real improvement beside the model's (docs/live.md).",
)
@plugin_options
def cli(scenario: str | None, out: str, resume: bool, budget: int, confirm: str | None = None,
        **opts: Any) -> None:
    """Tune SCENARIO's policy (a built-in name or a TOML file; default: small).

    Writes the best policy (best-policy.toml), report.json and plots to --out, and journals every
    evaluation so that --resume continues a killed run.
    """
    from memtune.tuner.executors import make_executor

    sc = scenario_arg(scenario)
    if confirm == "live":
        from memtune.live.safety import unavailable

        if unavailable():
            raise UserError(f"cannot confirm on this host: {unavailable()}", field="--confirm")
    config = _config(sc, budget, opts)
    if opts["workers"] is not None and opts["workers"] < 1:
        raise UserError("must be at least 1", field="--workers")
    metrics = _Metrics(opts["metrics_port"], opts["metrics_bind"])
    show = sys.stderr.isatty() if opts["progress"] is None else opts["progress"]
    obj = config.objective
    bar = _Bar(budget, _formatter(obj.kind, obj.slo_p99 is not None)) if show else None

    def on_eval(ev: Any, tuner: Any) -> None:
        if bar is not None:
            bar(ev, tuner)
        metrics.observe(ev)

    executor = make_executor(opts["workers"], opts["dask_scheduler"])
    try:
        report = _run(config, Path(out), resume, executor, on_eval, bar, opts["plots"])
    finally:
        executor.close()
        metrics.stop()
    from memtune.tuner.report import summary

    click.echo(summary(report))
    if confirm == "live":
        from memtune.live.confirm import confirm_live
        from memtune.live.confirm import summary as live_summary
        from memtune.tuner.report import POLICY_FILE

        click.echo(live_summary(confirm_live(sc, Path(out), POLICY_FILE, disable=tuple(opts["disable"]))))


def _formatter(kind: str, slo: bool) -> Any:
    from memtune.tuner.report import fmt_value

    return lambda v: fmt_value(v, kind, slo)


def _config(sc: Any, budget: int, o: dict[str, Any]) -> Any:
    """The run's :class:`TuneConfig` from the command's options (an unknown --presets name, a bad
    size or duration: exit 2)."""
    from memtune.tuner.config import TuneConfig
    from memtune.tuner.objective import Objective, parse_weights

    slo = duration_option(o["slo_p99"], "--slo-p99")
    obj = Objective(o["objective"], parse_weights(o["weights"]), slo)
    preset_list = None
    if o["presets"] is not None:
        from memtune.policies import list_presets

        preset_list = tuple(p.strip() for p in o["presets"].split(",") if p.strip())
        unknown = [p for p in preset_list if p not in list_presets()]
        if unknown:
            raise UserError(
                f"unknown preset {unknown[0]!r} (presets: {', '.join(list_presets())})", field="--presets"
            )
    return TuneConfig(
        scenario=sc, objective=obj, presets=preset_list, seed=o["seed"], budget=budget, batch=o["batch"],
        repeats=o["repeats"], initial_points=o["initial_points"], duration=duration_option(o["duration"]),
        fidelity=o["fidelity"], optimizer=o["optimizer"], group=o["group"], knobs=tuple(o["knobs"]),
        fix=tuple(o["fix"]), disable=tuple(o["disable"]), plugins=tuple(o["plugins"]),
        patience=o["patience"], time_limit=duration_option(o["time_limit"], "--time-limit"),
    )


class _Metrics:
    """``--metrics-port``: memtune_tuner_* metrics served for Prometheus during the run (or nothing)."""

    def __init__(self, port: int | None, bind: str) -> None:
        self.metrics = self.server = self.thread = None
        if port is None:
            return
        from prometheus_client.registry import CollectorRegistry

        from memtune.metrics.server import start_metrics_server
        from memtune.metrics.tuner import TunerMetrics

        registry = CollectorRegistry()
        self.metrics = TunerMetrics(registry)
        self.server, self.thread = start_metrics_server(registry, port=port, bind=bind)

    def observe(self, ev: Any) -> None:
        if self.metrics is None:
            return
        if ev.feasible and ev.value is not None:
            self.metrics.observe(ev.value)
        else:
            self.metrics.infeasible()

    def stop(self) -> None:
        if self.server is not None:
            from memtune.metrics.server import stop_metrics_server

            stop_metrics_server(self.server, self.thread)


def _run(config: Any, out: Path, resume: bool, executor: Any, on_eval: Any, bar: _Bar | None,
         plots: bool) -> dict[str, Any]:
    """Search, compare and write the outputs; the journal (and the lock on ``out``) is closed
    however the run ends."""
    from memtune.tuner.loop import Tuner
    from memtune.tuner.report import write_outputs

    tuner = Tuner(config, out, resume=resume, executor=executor, on_eval=on_eval, compare_early=True)
    try:
        if bar is not None:
            best = tuner.best()
            bar.skip(len(tuner.history), best.value if best else None)
        try:
            tuner.run()
        finally:
            if bar is not None:
                bar.close()
        return write_outputs(tuner, tuner.compare(tuner.best()), plots=plots)
    finally:
        tuner.journal.close()
