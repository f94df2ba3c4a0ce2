"""Errors that reach the user as one line.

A :class:`UserError` is a mistake in something the user handed in (a file, a flag, a name). The CLI
prints ``str(error)`` on one line and exits with ``exit_code``; no traceback. Everything else is a
bug: the CLI prints it on one line too, as an internal error, and keeps the traceback for
``memtune --debug``.
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
    """A plugin failed inside a hook (or, with ``hook=""``, while its module was imported); names
    the plugin and the hook."""

    exit_code = 1

    def __init__(self, plugin: str, hook: str, cause: BaseException) -> None:
        self.plugin = plugin
        self.hook = hook
        self.cause = cause
        where = f"in hook {hook}" if hook else "while importing"
        super().__init__(f"plugin {plugin!r} failed {where}: {type(cause).__name__}: {_cause_text(cause)}")


def _cause_text(cause: BaseException) -> str:
    if isinstance(cause, SyntaxError) and cause.filename:
        return f"{cause.msg} ({cause.filename}, line {cause.lineno})"
    return str(cause)


class OutputError(UserError):
    """Writing a result failed (disk full, permissions): names the file, says what was kept. Exit 1:
    the input was fine, the machine could not take the output."""

    exit_code = 1


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: the file(s) it names and the system's reason."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(repr(n) for n in names)}: {reason}" if names else reason


def one_line(text: str, limit: int = 2000) -> str:
    """``text`` as one terminal line: line breaks become ``; ``, other control characters are
    escaped (a file or VM name a user handed in may hold any of them), very long text is cut."""
    text = "; ".join(part.strip() for part in text.splitlines() if part.strip()) or text
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + "..."
