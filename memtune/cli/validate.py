"""``memtune validate``: the same scaled scenario on the model and on this Linux host, side by side
(docs/live.md). Needs root; changes KSM, zram, swap and cgroups for the run and restores them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from memtune.cli.common import duration_option, plugin_options, scenario_arg
from memtune.cli.params import PORT, Int
from memtune.errors import UserError
from memtune.inputs import read_text


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"expected comma-separated whole numbers, got {text!r}", field=flag) from None
    if not out:
        raise UserError("give at least one seed", field=flag)
    return out


def _settings_file(path: str) -> dict:
    import tomllib

    try:
        data = tomllib.loads(read_text(path, "the settings file"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"cannot read settings: {exc}", source=path) from None
    settings = data.get("settings")
    if not isinstance(settings, dict):
        raise UserError("no [settings] table", source=path)
    return settings


def _ksm(values: tuple[str, ...]) -> dict[str, int]:
    from memtune.live.ksm import KNOBS

    out = {}
    for v in values:
        name, _, value = v.partition("=")
        if name not in KNOBS or not value.strip().isdigit():
            raise UserError(f"expected KNOB=N with KNOB one of {', '.join(KNOBS)}, got {v!r}", field="--ksm")
        out[name] = int(value)
    return out


def _check_metrics_flags(port: int | None, out: str | None) -> None:
    if port is not None and not 0 <= port <= 65535:
        raise UserError(f"must be 0..65535, got {port}", field="--metrics-port")
    parent = Path(out).resolve().parent if out is not None else None
    if parent is not None and not parent.is_dir():
        raise UserError(f"directory {str(parent)!r} does not exist", field="--metrics-out")


@contextmanager
def _live_metrics(port: int | None, out: str | None) -> Iterator[object | None]:
    """The real host's metrics exporter while the runs go (None without --metrics-port/--metrics-out)."""
    if port is None and out is None:
        yield None
        return
    from memtune.live.exporter import LiveExporter, serve
    from memtune.metrics.server import stop_metrics_server

    exporter = LiveExporter(textfile=out)
    server = None
    if port is not None:
        server, thread = serve(exporter, port)
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        click.echo(f"memtune validate: real host metrics on {url}", err=True)
    try:
        yield exporter
    finally:
        if server is not None:
            stop_metrics_server(server, thread)


@click.command("validate")
@click.argument("scenario", required=False)
@click.option(
    "--policy", help="A preset name or policy TOML applied before scaling (default: the scenario as is)."
)
@click.option(
    "--duration",
    default="60s",
    show_default=True,
    help="Run length (the scenario's schedule is compressed into it).",
)
@click.option("--memory-scale", type=float, help="Divide memory by this (default: host about 512 MiB).")
@click.option(
    "--max-vms",
    type=Int(1, 10000),
    default=16,
    show_default=True,
    help="Keep at most this many VMs (in turn from each group).",
)
@click.option(
    "--seeds", default="1", show_default=True, help="Comma-separated seeds; each runs on both sides."
)
@click.option(
    "--calibration", metavar="FILE", help="Settings TOML from `memtune calibrate` laid over the scenario's."
)
@click.option(
    "--ksm",
    "ksm",
    multiple=True,
    metavar="KNOB=N",
    help="Share pages the Linux way on both sides (memtune.sharing = ksm) with this KSM value (repeatable).",
)
@click.option(
    "--linux",
    "linux",
    is_flag=True,
    help="Model the host's Linux mechanisms: zram compression (memtune.compression = zram) and LRU "
    "page-out victims (memtune.host_victims = cold).",
)
@click.option(
    "--out", default="memtune-validate", show_default=True, help="Directory for report.json and validate.png."
)
@click.option("--plots/--no-plots", default=True, show_default=True)
@click.option(
    "--force", is_flag=True, help="Go ahead although KSM, swap or zram look in use by something else."
)
@click.option(
    "--metrics-port",
    type=PORT,
    metavar="PORT",
    help="Serve the real host's memtune_* metrics on http://127.0.0.1:PORT/metrics while it runs "
    "(0: any free port).",
)
@click.option(
    "--metrics-out",
    metavar="FILE",
    help="Rewrite the real host's metrics to FILE each tick (node_exporter textfile format).",
)
@plugin_options
def cli(
    scenario,
    policy,
    duration,
    memory_scale,
    max_vms,
    seeds,
    calibration,
    ksm,
    linux,
    out,
    plots,
    force,
    metrics_port,
    metrics_out,
    disable,
    plugins,
):
    """Run SCENARIO (default: small) scaled down on the model and on this host; compare every figure."""
    from memtune.live.compare import ValidateConfig, summary_lines, validate
    from memtune.live.linux import LinuxDriver, LiveOptions
    from memtune.live.safety import unavailable

    _check_metrics_flags(metrics_port, metrics_out)
    sc = _scenario_to_run(scenario, calibration, policy, memory_scale, max_vms, ksm, linux)
    cfg = ValidateConfig(
        duration=duration_option(duration),
        memory_scale=memory_scale,
        max_vms=max_vms,
        seeds=_int_list(seeds, "--seeds"),
        disable=tuple(disable),
    )
    reason = unavailable()
    if reason:
        from memtune.live.state import HostError

        raise HostError(f"cannot run on this host: {reason}")
    with _live_metrics(metrics_port, metrics_out) as observer:
        driver = LinuxDriver(LiveOptions(force=force, observer=observer), disable=tuple(disable))
        report = validate(sc, cfg, driver, progress=lambda m: click.echo(m, err=True))
    report["policy"] = policy or "(scenario)"
    report["calibration"] = calibration
    _write_report(report, Path(out), plots)
    click.echo("\n".join(summary_lines(report)))


def _scenario_to_run(scenario, calibration, policy, memory_scale, max_vms, ksm, linux):
    """The scenario with the calibration's settings, the policy, the KSM values and the Linux
    mechanisms laid over it (flags checked before anything runs)."""
    sc = scenario_arg(scenario)
    if calibration:
        sc = sc.replace(settings={**sc.settings, **_settings_file(calibration)})
    if policy:
        from memtune.policies import apply_policy, load_policy

        sc = apply_policy(load_policy(policy), sc)
    if memory_scale is not None and memory_scale < 1:
        raise UserError(f"must be at least 1, got {memory_scale}", field="--memory-scale")
    if max_vms is not None and max_vms < 1:
        raise UserError(f"must be at least 1, got {max_vms}", field="--max-vms")
    if ksm:
        sc = sc.replace(
            settings={
                **sc.settings,
                "memtune.sharing": "ksm",
                **{f"ksm.{k}": v for k, v in _ksm(ksm).items()},
            }
        )
    if linux:
        linux_rules = {"memtune.compression": "zram", "memtune.host_victims": "cold"}
        sc = sc.replace(settings={**sc.settings, **linux_rules})
    return sc


def _write_report(report: dict, outdir: Path, plots: bool) -> None:
    """report.json (written whole: a temporary file renamed over it) and, with plots, validate.png."""
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = outdir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(outdir / "report.json")
    if plots:
        from memtune.live.plots import plot_report

        plot_report(report, outdir / "validate.png")
