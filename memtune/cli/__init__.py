"""The ``memtune`` command: a click group whose subcommands live one module per group.

User mistakes (:class:`memtune.errors.UserError`) end in one line on stderr and exit 2; a plugin
that fails inside a hook ends in one line naming the plugin and the hook and exit 1 (the full
traceback only with ``--debug``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from memtune import __version__
from memtune.errors import PluginError, UserError

# (module, command name) of every subcommand; each module defines a click command or group `cli`.
COMMANDS = (
    ("memtune.cli.simulate", "simulate"),
    ("memtune.cli.scenario", "scenario"),
    ("memtune.cli.optimize", "optimize"),
    ("memtune.cli.serve", "serve"),
    ("memtune.cli.plugins", "plugins"),
    ("memtune.cli.plugin_new", "plugin"),
    ("memtune.cli.policy", "policy"),
    ("memtune.cli.audit", "audit"),
    ("memtune.cli.profile", "profile"),
    ("memtune.cli.importer", "import"),
    ("memtune.cli.calibrate", "calibrate"),
)


class MemtuneGroup(click.Group):
    """Loads subcommands lazily and turns user errors into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for module, name in COMMANDS if importlib.util.find_spec(module) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for module, cmd_name in COMMANDS:
            if cmd_name == name and importlib.util.find_spec(module) is not None:
                return importlib.import_module(module).cli
        return None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"memtune: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except PluginError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"memtune: error: {exc} (run with --debug for the traceback)", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=MemtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="memtune")
@click.option("--debug", is_flag=True, help="Show full tracebacks for plugin failures.")
@click.pass_context
def main_group(ctx: click.Context, debug: bool) -> None:
    """Model, watch and tune how a virtualization host manages memory under pressure."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        main_group.main(args=argv, prog_name="memtune")
    except KeyboardInterrupt:
        click.echo("memtune: interrupted", err=True)
        sys.exit(130)
