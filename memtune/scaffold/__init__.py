"""``memtune plugin new NAME``: write a ready-to-install third-party plugin package.

The package (``memtune-<name>/``) holds a pyproject with the ``memtune`` entry point, a module with
one ``@hookimpl`` and a test written with :mod:`memtune.testing`; ``pip install -e`` it and
``memtune plugins`` lists it. Templates live in ``memtune/scaffold/templates/*.tmpl``
(:class:`string.Template`, ``$name``, ``$module``, ``$dist``, ``$memtune_version``).
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from memtune.errors import UserError

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*$")
MAX_NAME = 64       # the folder memtune-<name> and the module memtune_<name> stay far below NAME_MAX

# template file -> path inside the package folder ({module} is replaced)
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "module.py.tmpl": "{module}/__init__.py",
    "test_plugin.py.tmpl": "tests/test_{name}.py",
    "LICENSE.tmpl": "LICENSE",
    "gitignore.tmpl": ".gitignore",
    "workflow.yml.tmpl": ".github/workflows/test.yml",
}


def names(name: str) -> dict[str, str]:
    """Plugin name (entry point), module and distribution names for ``name``; UserError if unusable."""
    if not _NAME.match(name):
        raise UserError(f"plugin names are lower-case letters and digits, words joined by '_' or '-', "
                        f"starting with a letter; got {name!r}", field="NAME")
    if len(name) > MAX_NAME:
        raise UserError(f"plugin names are at most {MAX_NAME} characters; got {len(name)}", field="NAME")
    plugin = name.replace("-", "_")
    if keyword.iskeyword(plugin) or plugin in ("core", "memtune"):
        raise UserError(f"{name!r} is reserved", field="NAME")
    taken = _taken(plugin)
    if taken:
        raise UserError(f"{name!r} is the name of {taken}; an installed plugin of that name would be "
                        f"skipped: choose another name", field="NAME")
    from memtune import __version__

    return {"name": plugin, "module": f"memtune_{plugin}", "dist": f"memtune-{plugin.replace('_', '-')}",
            "memtune_version": __version__}


def _taken(plugin: str) -> str | None:
    """What already holds the plugin name ``plugin``: a built-in, or an installed package."""
    from importlib.metadata import entry_points

    from memtune.core.plugins import DEFAULT_PLUGINS

    if any(path.rsplit(".", 1)[-1] == plugin for path in DEFAULT_PLUGINS):
        return "a built-in plugin"
    for ep in entry_points(group="memtune"):
        if ep.name == plugin:
            return f"the plugin of installed package {ep.dist.name if ep.dist else ep.value!r}"
    return None


def render(name: str) -> dict[str, str]:
    """Relative path -> file text of the package for plugin ``name``."""
    subst = names(name)
    folder = resources.files("memtune.scaffold").joinpath("templates")
    out = {}
    for tmpl, target in FILES.items():
        text = Template(folder.joinpath(tmpl).read_text()).substitute(subst)
        out[target.format(**subst)] = text
    return out


def create(name: str, directory: str | Path = ".") -> Path:
    """Write the package for ``name`` into ``directory/memtune-<name>``; returns that folder."""
    files = render(name)
    root = Path(directory) / names(name)["dist"]
    if root.exists():
        raise UserError("already exists; choose another name or folder", source=str(root))
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
