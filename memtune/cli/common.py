"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from memtune.core.scenario import Scenario, load_scenario
from memtune.errors import UserError
from memtune.schema.types import duration_seconds


def scenario_arg(ref: str | None) -> Scenario:
    return load_scenario(ref)


def duration_option(value: str | None, flag: str = "--duration") -> float | None:
    """Seconds from a duration flag, by the scenario file's rule: greater than zero, at most a year."""
    if value is None:
        return None
    try:
        return duration_seconds(value, positive=True)
    except ValueError as exc:
        raise UserError(f"{exc} (got {value!r})", field=flag) from None


def plugin_options(f: Callable) -> Callable:
    """``--disable-plugin NAME`` (repeatable) and ``-p/--plugin module.path`` (repeatable)."""
    f = click.option("--disable-plugin", "disable", multiple=True, metavar="NAME",
                     help="Do not load this plugin (repeatable).")(f)
    f = click.option("-p", "--plugin", "plugins", multiple=True, metavar="MODULE",
                     help="Load a plugin from a local module path (repeatable).")(f)
    return f


class Progress:
    """A click progress bar on stderr, shown only for runs longer than ``after`` seconds."""

    def __init__(self, label: str, *, after: float = 2.0, enabled: bool = True) -> None:
        self.label = label
        self.after = after
        self.enabled = enabled and sys.stderr.isatty() or enabled == "always"
        self.start = time.monotonic()
        self.bar: Any = None
        self.done = 0

    def __call__(self, fraction: float) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.start < self.after:
                return
            self.bar = click.progressbar(length=1000, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        step = int(fraction * 1000) - self.done
        if step > 0:
            self.bar.update(step)
            self.done += step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=_json_default))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
