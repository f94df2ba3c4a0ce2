"""``memtune policy``: list, show, validate and export memory-management policies."""

from __future__ import annotations

from pathlib import Path

import click

from memtune.cli.common import scenario_arg
from memtune.units import format_size


@click.group("policy")
def cli() -> None:
    """Memory policies: per-VM reservation / limit / shares / salt / max balloon and host settings."""


@cli.command("list")
def list_cmd() -> None:
    """List the built-in presets."""
    from memtune.policies import list_presets, load_policy

    for name in list_presets():
        click.echo(f"{name:24} {load_policy(name).description}")


@cli.command("show")
@click.argument("policy")
@click.option("--scenario", "scenario_ref", metavar="SCENARIO",
              help="Also show every VM's values with the policy applied to this scenario.")
def show_cmd(policy: str, scenario_ref: str | None) -> None:
    """Print POLICY (a preset name or a TOML file) as TOML, and per VM with --scenario."""
    from memtune.policies import load_policy, resolve_vms, validate_policy

    pol = load_policy(policy)
    click.echo(pol.to_toml(), nl=False)
    if scenario_ref is None:
        return
    sc = scenario_arg(scenario_ref)
    validate_policy(pol, sc)
    click.echo(f"\n# applied to scenario {sc.name}")
    click.echo(f"# {'VM':16} {'memory':>9} {'min':>9} {'max':>9} {'shares':>7} {'maxmemctl':>9} salt")
    for v in resolve_vms(pol, sc):
        limit = "unlimited" if v.limit is None else format_size(v.limit)
        ctl = "-" if v.maxmemctl is None else format_size(v.maxmemctl)
        click.echo(f"# {v.name:16} {format_size(v.memory):>9} {format_size(v.reservation):>9} {limit:>9} "
                   f"{v.shares!s:>7} {ctl:>9} {v.salt if v.salt is not None else '-'}")


@cli.command("validate")
@click.argument("policy")
@click.option("--scenario", "scenario_refs", metavar="SCENARIO", multiple=True,
              help="Check against this scenario too (repeatable): VM names, limits, admission control.")
def validate_cmd(policy: str, scenario_refs: tuple[str, ...]) -> None:
    """Check POLICY; exit 2 with one line naming the field if it is invalid."""
    from memtune.policies import load_policy, validate_policy

    pol = load_policy(policy)
    validate_policy(pol)
    for ref in scenario_refs:
        validate_policy(pol, scenario_arg(ref))
    against = f" against {', '.join(scenario_refs)}" if scenario_refs else ""
    click.echo(f"ok: policy {pol.name} ({pol.source}) is valid{against}")


@cli.command("export")
@click.argument("policy")
@click.option("--format", "fmt", required=True,
              type=click.Choice(["vmx", "esxcli", "powercli", "libvirt", "cgroup", "ksm-sysfs", "ksmtuned"]),
              help="What to write: .vmx lines, esxcli or PowerCLI commands, libvirt <memtune>, cgroup v2, "
                   "KSM sysfs script, ksmtuned.conf.")
@click.option("--scenario", "scenario_ref", metavar="SCENARIO",
              help="Resolve per-VM rules against this scenario's VMs (needed for per-VM output).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write to FILE instead of standard output.")
def export_cmd(policy: str, fmt: str, scenario_ref: str | None, output: Path | None) -> None:
    """Write POLICY as an administrator would paste it into ESXi, vSphere, libvirt or cgroup v2."""
    from memtune.policies import load_policy
    from memtune.policies.export import export_policy

    pol = load_policy(policy)
    sc = scenario_arg(scenario_ref) if scenario_ref is not None else None
    text = export_policy(pol, fmt, sc)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
