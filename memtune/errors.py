"""Errors that reach the user as one line.

A :class:`UserError` is a mistake in something the user handed in (a file, a flag, a name). The CLI
prints ``str(error)`` on one line and exits with ``exit_code``; no traceback. Everything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in user input: names the source (file) and the field when known."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.source = source
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.source and self.field:
            where = f"{self.source}: {self.field}: "
        elif self.source:
            where = f"{self.source}: "
        elif self.field:
            where = f"{self.field}: "
        return f"{where}{self.message}"


class ConfigError(UserError):
    """A scenario, policy or settings file (or table) is invalid."""


class AdmissionError(UserError):
    """Reservations plus overhead do not fit the host (vSphere admission control)."""


class PluginError(Exception):
    """A plugin failed inside a hook; names the plugin and the hook."""

    exit_code = 1

    def __init__(self, plugin: str, hook: str, cause: BaseException) -> None:
        self.plugin = plugin
        self.hook = hook
        self.cause = cause
        super().__init__(f"plugin {plugin!r} failed in hook {hook}: {type(cause).__name__}: {cause}")
