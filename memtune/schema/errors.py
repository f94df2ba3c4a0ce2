"""Validation errors as one line: file, field path, what is allowed, the value given.

Pydantic's errors come with a location (``('vm', 0, 'memory')``), the input and a message; cross-field
rules raise :class:`FieldError` with the path they concern. Both become a
:class:`~memtune.errors.ConfigError` (exit 2 in the CLI).
"""

from __future__ import annotations

import typing
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from memtune.core.names import one_line
from memtune.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class FieldError(Exception):
    """A cross-field rule failed at ``path`` (``"vm[2].reservation"``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def field_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """``('vm', 0, 'workload', 'wss')`` -> ``vm[0].workload.wss``; union tags (``@...``) dropped."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith("@"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _shown(value: Any) -> str:
    text = one_line(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the field at ``loc`` (for listing the keys it allows)."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.startswith("@")):
            continue
        if isinstance(cur, type) and issubclass(cur, BaseModel) and part in cur.model_fields:
            cur = cur.model_fields[part].annotation
        elif typing.get_origin(cur) is dict:
            cur = typing.get_args(cur)[1]
        else:
            return None
        while (
            typing.get_origin(cur) in (list, dict, typing.Union, typing.Annotated)
            or type(cur).__name__ == "UnionType"
        ):
            args = [a for a in typing.get_args(cur) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if models:
                cur = models[0]
                break
            if typing.get_origin(cur) is dict:
                break
            cur = args[-1] if args else None
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


# pydantic's error types in memtune's words ({...} from the error's context)
_WORDS = {
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "string_type": "expected text",
    "literal_error": "expected one of {expected}",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "list_type": "expected an array",
    "too_short": "expected at least {min_length} entries",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
}


def _message(model: type[BaseModel], err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "missing required field"
    if kind == "extra_forbidden":
        holder = _model_at(model, tuple(err["loc"][:-1]))
        if holder is None:
            return "unknown key"
        keys = sorted(f.alias or name for name, f in holder.model_fields.items())
        return f"{getattr(holder, 'unknown_key', 'unknown key')} (allowed: {', '.join(keys)})"
    ctx = err.get("ctx", {})
    if kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    elif kind in _WORDS:
        msg = _WORDS[kind].format(**ctx)
    else:
        msg = err["msg"]
    value = err.get("input")
    if isinstance(value, dict | list) and kind != "value_error" or ", got " in msg:
        return msg  # a container, or a message that already names the value (units' parse errors)
    return f"{msg}, got {_shown(value)}"


def config_error(model: type[BaseModel], exc: ValidationError, source: str, prefix: str = "") -> ConfigError:
    """The first error of ``exc`` as one line naming ``source`` and the field."""
    err = exc.errors(include_url=False)[0]
    return ConfigError(
        _message(model, err), source=source, field=field_path(tuple(err["loc"]), prefix) or None
    )


def validate(model: type[M], data: Any, source: str, prefix: str = "", context: Any = None) -> M:
    """``data`` (parsed TOML) as ``model``; ConfigError (one line) when it does not fit."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise config_error(model, exc, source, prefix) from None
    except FieldError as exc:
        path = f"{prefix}.{exc.path}" if prefix and exc.path else (prefix or exc.path)
        raise ConfigError(exc.message, source=source, field=path or None) from None
