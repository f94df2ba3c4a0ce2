"""Host settings: the knobs plugins and the core declare, with defaults and sources.

Every default in the model is a :class:`Setting` with the name of the real option it mirrors
(``Mem.IdleTax``, ``Mem.ShareForceSalting`` ...) or a ``latency.*`` name for a cost, and the source
of its default. Plugins declare theirs through the ``memtune_register_settings`` hook; scenarios and
policies set them by name; unknown names are errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memtune.errors import ConfigError
from memtune.units import parse_duration, parse_size

KINDS = ("int", "float", "bool", "str", "bytes", "seconds", "percent")


@dataclass(frozen=True)
class Setting:
    """One host-level knob: name, kind, default, bounds and where the default comes from."""

    name: str
    kind: str
    default: Any
    help: str
    source: str = ""
    owner: str = "core"
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    tunable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: unknown kind {self.kind!r}")

    def coerce(self, value: Any) -> Any:
        """The value in base units (bytes, seconds, plain numbers), or ValueError."""
        kind = self.kind
        if kind == "bool":
            if isinstance(value, bool):
                out: Any = value
            elif isinstance(value, int) and value in (0, 1):
                out = bool(value)
            else:
                raise ValueError(f"expected true/false, got {value!r}")
        elif kind == "int" or kind == "percent":
            if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
                raise ValueError(f"expected a whole number, got {value!r}")
            out = int(value)
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expected a number, got {value!r}")
            out = float(value)
        elif kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"expected text, got {value!r}")
            out = value
        elif kind == "bytes":
            out = parse_size(value)
        else:
            out = parse_duration(value)
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"expected one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.minimum is not None and out < self.minimum:
            raise ValueError(f"must be >= {self.minimum}, got {value!r}")
        if self.maximum is not None and out > self.maximum:
            raise ValueError(f"must be <= {self.maximum}, got {value!r}")
        return out


@dataclass
class SettingsRegistry:
    """All declared settings, by name."""

    settings: dict[str, Setting] = field(default_factory=dict)

    def register(self, setting: Setting) -> None:
        existing = self.settings.get(setting.name)
        if existing is not None and existing.owner != setting.owner:
            raise ValueError(
                f"setting {setting.name} declared by both {existing.owner!r} and {setting.owner!r}"
            )
        self.settings[setting.name] = setting

    def defaults(self) -> dict[str, Any]:
        return {name: s.coerce(s.default) for name, s in self.settings.items()}

    def resolve(self, given: Mapping[str, Any], *, source: str, table: str = "settings") -> dict[str, Any]:
        """Defaults overlaid with ``given``, each value checked; unknown names are errors."""
        out = self.defaults()
        for name, value in given.items():
            setting = self.settings.get(name)
            if setting is None:
                raise ConfigError(f"unknown setting (known: {', '.join(sorted(self.settings))})",
                                  source=source, field=f"{table}.{name}")
            try:
                out[name] = setting.coerce(value)
            except ValueError as exc:
                raise ConfigError(str(exc), source=source, field=f"{table}.{name}") from None
        return out

    def __iter__(self) -> Iterable[Setting]:
        return iter(self.settings.values())

    def __contains__(self, name: str) -> bool:
        return name in self.settings

    def __getitem__(self, name: str) -> Setting:
        return self.settings[name]

    def items(self) -> Iterable[tuple[str, Setting]]:
        return self.settings.items()
