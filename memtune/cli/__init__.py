"""The ``memtune`` command: a click group whose subcommands live one module per group.

The one error boundary of the CLI (:meth:`MemtuneGroup.invoke`): every failure ends in one line on
stderr. User mistakes (:class:`memtune.errors.UserError`) exit 2; a plugin that fails inside a hook
(one line naming the plugin and the hook), a file the system will not read or write (disk full,
permissions) and anything else exit 1. Tracebacks only with ``memtune --debug``.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import sys

import click

from memtune import __version__
from memtune.errors import PluginError, UserError, one_line, os_error_line

# (module, command name) of every subcommand; each module defines a click command or group `cli`.
COMMANDS = (
    ("memtune.cli.simulate", "simulate"),
    ("memtune.cli.scenario", "scenario"),
    ("memtune.cli.optimize", "optimize"),
    ("memtune.cli.serve", "serve"),
    ("memtune.cli.grafana", "grafana"),
    ("memtune.cli.plugins", "plugins"),
    ("memtune.cli.plugin_new", "plugin"),
    ("memtune.cli.policy", "policy"),
    ("memtune.cli.audit", "audit"),
    ("memtune.cli.profile", "profile"),
    ("memtune.cli.importer", "import"),
    ("memtune.cli.calibrate", "calibrate"),
    ("memtune.cli.live", "live"),
    ("memtune.cli.validate", "validate"),
    ("memtune.cli.schema", "schema"),
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
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise                           # click prints these itself (usage errors exit 2)
        except UserError as exc:
            fail(ctx, str(exc), exc.exit_code)
        except PluginError as exc:
            fail(ctx, str(exc), exc.exit_code, exc, hint=True)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise                       # click quiets a closed standard output
            fail(ctx, os_error_line(exc), 1, exc)
        except Exception as exc:  # noqa: BLE001 - the boundary: a bug still ends in one line
            fail(ctx, f"internal error: {type(exc).__name__}: {exc} (a bug in memtune: please report it)",
                 1, exc, hint=True)


def fail(ctx: click.Context, message: str, code: int, exc: BaseException | None = None, *,
         hint: bool = False) -> None:
    """End the command with ``message`` on one line and exit ``code``; with ``--debug`` re-raise
    ``exc`` so its traceback shows."""
    if exc is not None and ctx.obj and ctx.obj.get("debug"):
        raise exc
    more = " (run with --debug for the traceback)" if hint else ""
    click.echo(f"memtune: error: {one_line(message)}{more}", err=True)
    ctx.exit(code)


@click.group(cls=MemtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="memtune")
@click.option("--debug", is_flag=True, help="Show the full traceback of any failure.")
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
