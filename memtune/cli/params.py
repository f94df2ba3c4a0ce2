"""Flag types whose bad values are one line naming the flag (exit 2) before any work starts."""

from __future__ import annotations

import math
from typing import Any

import click

from memtune.errors import UserError
from memtune.schema.types import SEED_MAX


def flag_name(param: click.Parameter | None) -> str:
    return max(param.opts, key=len) if param is not None and param.opts else "option"


class Int(click.ParamType):
    """A whole number within ``minimum .. maximum``."""

    name = "integer"

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            try:
                n = int(str(value).strip())
            except ValueError:
                raise UserError(f"expected a whole number, got {value!r}", field=flag_name(param)) from None
        if self.minimum is not None and n < self.minimum:
            raise UserError(f"must be at least {self.minimum}, got {n}", field=flag_name(param))
        if self.maximum is not None and n > self.maximum:
            raise UserError(f"must be at most {self.maximum}, got {n}", field=flag_name(param))
        return n


class PositiveFloat(click.ParamType):
    """A finite number greater than zero (no nan, no inf)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise UserError(f"expected a number, got {value!r}", field=flag_name(param)) from None
        if not math.isfinite(x) or x <= 0:
            raise UserError(
                f"must be a finite number greater than zero, got {value!r}", field=flag_name(param)
            )
        return x


class Choice(click.Choice):
    """click.Choice whose error is one line naming the flag."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value not in self.choices:
            raise UserError(
                f"expected one of {', '.join(self.choices)}, got {value!r}", field=flag_name(param)
            )
        return value


SEED = Int(0, SEED_MAX)
PORT = Int(0, 65535)  # 0: any free port
