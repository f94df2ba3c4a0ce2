"""Plugins import memtune through its front module only (``memtune.plugin``), as llm and datasette
plugins import ``llm`` / ``datasette``: a plugin that reaches into ``memtune.core`` or
``memtune.metrics`` breaks when the core is reorganised."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import memtune.plugin

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("memtune.core", "memtune.metrics", "memtune.tuner", "memtune.policies", "memtune.cli")


def plugin_modules() -> list[Path]:
    """Built-in plugin modules, the core's own settings module, and example plugin packages (not
    their tests, which may use memtune.testing)."""
    files = sorted((ROOT / "memtune" / "plugins").glob("*.py")) + [ROOT / "memtune" / "core" / "builtin.py"]
    for pkg in sorted((ROOT / "examples").glob("*/*/__init__.py")):
        files += sorted(p for p in pkg.parent.rglob("*.py") if "tests" not in p.parts)
    return files


def memtune_imports(path: Path) -> list[str]:
    """Every module a file imports from the memtune package, at any depth (TYPE_CHECKING too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("memtune")]
        elif (
            isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("memtune")
        ):
            out.append(node.module)
    return out


def test_there_are_plugins_to_check() -> None:
    names = {p.stem for p in plugin_modules()}
    assert {"balloon", "tps", "compression", "swap", "encryption", "audit", "builtin"} <= names
    assert any("examples" in p.parts for p in plugin_modules())


@pytest.mark.parametrize("path", plugin_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_imports_only_the_front_module(path: Path) -> None:
    bad = [m for m in memtune_imports(path) if m.startswith(FORBIDDEN)]
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad}; import from memtune.plugin instead"


def test_the_checker_catches_a_core_import(tmp_path: Path) -> None:
    p = tmp_path / "bad.py"
    p.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from memtune.core.host import Host\n"
        "def f():\n    from memtune.metrics.families import vm_gauge\n"
    )
    assert memtune_imports(p) == ["memtune.core.host", "memtune.metrics.families"]


def test_scaffold_templates_use_the_front_module() -> None:
    for tmpl in (ROOT / "memtune" / "scaffold" / "templates").glob("module.py.tmpl"):
        text = tmpl.read_text()
        assert "from memtune.plugin import" in text
        assert not any(f"from {m}" in text or f"import {m}" in text for m in FORBIDDEN)


def test_front_module_exports_what_it_lists() -> None:
    for name in memtune.plugin.__all__:
        assert hasattr(memtune.plugin, name), name
