"""The plugin manager: built-in techniques and third-party plugins on the same hooks.

Built-ins are listed by module path and registered exactly as an entry point of the ``memtune``
group would be. ``MEMTUNE_PLUGINS`` (comma-separated names) keeps only those plugins;
``MEMTUNE_DISABLE_PLUGINS`` and ``disable=`` block names; ``modules=`` adds local modules
(``-p module.path``). A hook-call monitor (pluggy's ``add_hookcall_monitoring``) turns an exception
from a hook implementation into a :class:`memtune.errors.PluginError` naming the plugin and the hook.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy

from memtune.core import hookspecs
from memtune.errors import PluginError, UserError

DEFAULT_PLUGINS = (
    "memtune.core.builtin",
    "memtune.plugins.balloon",
    "memtune.plugins.tps",
    "memtune.plugins.ksm",
    "memtune.plugins.compression",
    "memtune.plugins.swap",
    "memtune.plugins.encryption",
    "memtune.plugins.audit",
)
ALWAYS_ON = {"core"}


def _name_of(module_path: str) -> str:
    return "core" if module_path == "memtune.core.builtin" else module_path.rsplit(".", 1)[-1]


@dataclass
class PluginInfo:
    """What ``memtune plugins`` shows about one loaded plugin."""

    name: str
    source: str                 # "builtin", "entrypoint", "module"
    module: str
    version: str | None
    hooks: list[str] = field(default_factory=list)


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [x.strip() for x in raw.split(",") if x.strip()]


def _raised_in(exc: BaseException, impls: Iterable[pluggy.HookImpl]) -> str | None:
    """The plugin whose hook implementation ``exc`` was raised in (the outermost one on its
    traceback: a hook called from inside another hook has already named its own plugin)."""
    owner = {}
    for impl in impls:
        fn = inspect.unwrap(impl.function)
        code = getattr(getattr(fn, "__func__", fn), "__code__", None)
        if code is not None:
            owner[code] = impl.plugin_name
    tb = exc.__traceback__
    while tb is not None:
        name = owner.get(tb.tb_frame.f_code)
        if name is not None:
            return name
        tb = tb.tb_next
    return None


def _name_the_plugin(outcome: pluggy.Result, hook_name: str, hook_impls: Sequence[pluggy.HookImpl],
                     kwargs: Mapping[str, Any]) -> None:
    """Hook-call monitor: an exception from a hook implementation becomes a :class:`PluginError`
    naming the plugin and the hook."""
    exc = outcome.exception
    if exc is None or isinstance(exc, PluginError | UserError) or not isinstance(exc, Exception):
        return
    plugin = _raised_in(exc, hook_impls)
    if plugin is None:
        return
    err = PluginError(plugin, hook_name, exc)
    err.__cause__ = exc
    outcome.force_exception(err)


class MemtunePluginManager(pluggy.PluginManager):
    """A pluggy manager that knows where each plugin came from."""

    def __init__(self) -> None:
        super().__init__("memtune")
        self.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.add_hookcall_monitoring(lambda *args: None, _name_the_plugin)

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self._memtune_registry = None           # the registry is collected again on next use
        return super().register(plugin, name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        self._memtune_registry = None
        return super().unregister(plugin, name)

    def register_named(self, plugin: object, name: str, source: str, version: str | None = None) -> None:
        """Register ``plugin`` as ``name`` and validate its hook implementations now.

        A misspelled hook, an argument the spec does not have, or a function named like a hook but
        not marked ``@hookimpl`` is a :class:`UserError` naming the plugin, raised at load time.
        """
        _check_undecorated(plugin, name)
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise UserError(f"plugin {name!r}: {_validation_message(exc)}") from None
        except ValueError as exc:
            raise UserError(f"plugin {name!r} could not be registered: {exc}") from None
        try:
            self.check_pending()
        except pluggy.PluginValidationError as exc:
            self.unregister(plugin)
            raise UserError(f"plugin {name!r}: {_validation_message(exc)}") from None
        hooks = sorted(c.name for c in (self.get_hookcallers(plugin) or []))
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self.info[name] = PluginInfo(name, source, module, version, hooks)

    def plugin_names(self) -> list[str]:
        return list(self.info)


def hook_names() -> list[str]:
    """Every hook memtune calls, in spec order."""
    return [n for n in vars(hookspecs) if n.startswith("memtune_") and callable(getattr(hookspecs, n))]


def _validation_message(exc: pluggy.PluginValidationError) -> str:
    """pluggy's message, plus the closest hook name when a hook is unknown."""
    msg = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    m = re.search(r"unknown hook '([^']+)'", msg)
    if m:
        close = difflib.get_close_matches(m.group(1), hook_names(), n=1)
        msg = f"unknown hook {m.group(1)!r}" + (f" (did you mean {close[0]}?)" if close else "")
    return msg


def _check_undecorated(plugin: object, name: str) -> None:
    """A function named exactly like a hook but without ``@hookimpl`` would silently do nothing."""
    known = set(hook_names())
    for attr in dir(plugin):
        if attr in known:
            fn = getattr(plugin, attr, None)
            if callable(fn) and not hasattr(fn, "memtune_impl"):
                raise UserError(f"plugin {name!r}: {attr} is not marked @hookimpl "
                                f"(from memtune import hookimpl), so memtune would never call it")


def builtin_version() -> str:
    from memtune import __version__

    return __version__


def build_plugin_manager(*, disable: Iterable[str] = (), modules: Iterable[str] = (),
                         entrypoints: bool = True, builtins: bool = True,
                         extra: Iterable[tuple[str, object]] = ()) -> MemtunePluginManager:
    """A plugin manager with the built-ins, entry points and local modules, minus the blocked."""
    pm = MemtunePluginManager()
    disable = tuple(disable)
    wanted = _selection(disable)
    if builtins:
        for path in DEFAULT_PLUGINS:
            name = _name_of(path)
            if wanted(name):
                pm.register_named(importlib.import_module(path), name, "builtin", builtin_version())
    if entrypoints:
        _register_entrypoints(pm, wanted)
    for path in modules:
        module = _import_module(path)
        name = _name_of(path)
        if pm.get_plugin(name) is not None:
            raise UserError(f"plugin {name!r} is already loaded")
        pm.register_named(module, name, "module")
    for name, plugin in extra:
        pm.register_named(plugin, name, "object")
    _check_names_given(pm, disable)
    return pm


def _selection(disable: Iterable[str]) -> Callable[[str], bool]:
    """Which plugins load: the core always; then not the blocked (``--disable-plugin``,
    ``MEMTUNE_DISABLE_PLUGINS``); then, if ``MEMTUNE_PLUGINS`` is set, only those it names."""
    allow = _env_list("MEMTUNE_PLUGINS")
    blocked = set(disable) | set(_env_list("MEMTUNE_DISABLE_PLUGINS") or [])
    if blocked & ALWAYS_ON:
        raise UserError("the core cannot be disabled")

    def wanted(name: str) -> bool:
        if name in ALWAYS_ON:
            return True
        if name in blocked:
            return False
        return allow is None or name in allow

    return wanted


def _register_entrypoints(pm: MemtunePluginManager, wanted: Callable[[str], bool]) -> None:
    """Plugins of installed packages (entry-point group ``memtune``): one that takes a built-in's
    name, or a name another package took, is skipped with a warning; one that fails to load is an
    error naming it."""
    from importlib.metadata import entry_points

    builtin_names = {_name_of(p) for p in DEFAULT_PLUGINS}
    seen: dict[str, tuple[str, str]] = {}      # name -> (entry point value, package)
    for ep in entry_points(group="memtune"):
        if ep.name in builtin_names:
            _warn_once(
                f"skipped plugin {ep.name!r} of package {_dist_name(ep)} ({ep.value}): it takes the "
                f"name of a built-in plugin; rename its entry point (to replace the built-in, "
                f"disable {ep.name!r} and load yours under another name)"
            )
            continue
        if ep.name in seen:
            if seen[ep.name][0] != ep.value:
                _warn_once(
                    f"skipped plugin {ep.name!r} of package {_dist_name(ep)} ({ep.value}): package "
                    f"{seen[ep.name][1]} ({seen[ep.name][0]}) already defines a plugin of that name"
                )
            continue  # the same distribution found twice on sys.path
        seen[ep.name] = (ep.value, _dist_name(ep))
        if not wanted(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party package
            raise UserError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from None
        version = ep.dist.version if ep.dist is not None else None
        pm.register_named(plugin, ep.name, "entrypoint", version)


def _check_names_given(pm: MemtunePluginManager, disable: Iterable[str]) -> None:
    """Every plugin named in ``--disable-plugin`` or the environment exists (a typo would
    otherwise silently keep the plugin on)."""
    known = set(pm.info) | {_name_of(p) for p in DEFAULT_PLUGINS}
    for name in sorted(set(disable)):
        if name not in known and not _entrypoint_exists(name):
            raise UserError(
                f"unknown plugin {name!r} in --disable-plugin (known: {', '.join(sorted(known))})"
            )
    for env in ("MEMTUNE_PLUGINS", "MEMTUNE_DISABLE_PLUGINS"):
        for name in _env_list(env) or []:
            if name not in known and not _entrypoint_exists(name):
                raise UserError(f"unknown plugin {name!r} (known: {', '.join(sorted(known))})", field=env)


_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """One ``memtune: warning:`` line on stderr per process (the manager is built many times)."""
    if message not in _warned:
        _warned.add(message)
        print(f"memtune: warning: {message}", file=sys.stderr)


def _dist_name(ep: object) -> str:
    dist = getattr(ep, "dist", None)
    return repr(dist.name) if dist is not None else "(unknown package)"


def _import_module(path: str) -> object:
    """The module ``-p path`` names. A file path or a name that is no module path, or a module that
    is not there, is a UserError (exit 2); a module that fails while importing (a syntax error, an
    exception) is a PluginError (exit 1, its traceback with --debug)."""
    if not _MODULE_PATH.match(path) or path.endswith(".py"):
        hint = ""
        if path.endswith(".py") or "/" in path or os.sep in path:
            stem = os.path.splitext(os.path.basename(path))[0]
            hint = (
                f": -p takes a module name, not a file; put its folder on PYTHONPATH and give -p {stem!r}"
                if _MODULE_PATH.match(stem)
                else ": -p takes a module name, not a file"
            )
        raise UserError(
            f"plugin module {path!r} is not a module path (names joined by dots){hint}", field="-p"
        )
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (path == exc.name or path.startswith(exc.name + ".")):
            raise UserError(f"plugin module {path!r} cannot be imported: {exc}", field="-p") from None
        raise PluginError(path, "", exc) from exc  # the module imports something missing
    except Exception as exc:  # noqa: BLE001 - re-raised naming the plugin (SyntaxError included)
        raise PluginError(path, "", exc) from exc


def _entrypoint_exists(name: str) -> bool:
    from importlib.metadata import entry_points

    return any(ep.name == name for ep in entry_points(group="memtune"))
