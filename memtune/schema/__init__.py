"""The declarative schema of memtune's input files (pydantic v2 models), and their JSON Schema.

``validate(model, data, source)`` checks parsed TOML against a model and raises one-line
:class:`~memtune.errors.ConfigError`; ``json_schema("scenario" | "policy")`` is what
``memtune schema`` prints. Why pydantic: ``docs/scenarios.md`` (dependency notes).
"""

from __future__ import annotations

from typing import Any

from memtune.schema.errors import FieldError, validate

KINDS = ("scenario", "policy")


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a ``scenario`` or ``policy`` file."""
    if kind == "scenario":
        from memtune.schema.scenario import ScenarioFile as model
    elif kind == "policy":
        from memtune.schema.policy import PolicyFile as model
    else:
        raise ValueError(f"unknown schema {kind!r} (known: {', '.join(KINDS)})")
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


__all__ = ["FieldError", "KINDS", "json_schema", "validate"]
