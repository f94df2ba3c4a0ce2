"""The plugin docs stay true: every hook is in the reference and is called with the arguments it
documents, every hook spec is typed and documented, and the tutorial's plugin and test run as written (like
datasette's
tests/test_docs.py)."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from memtune.core import hookspecs
from memtune.core.engine import Engine
from memtune.core.host import Host
from memtune.core.pages import RESIDENT
from memtune.core.plugins import hook_names
from memtune.core.registry import registry_of
from memtune.core.scenario import Scenario
from memtune.plugin import hookimpl
from memtune.testing import collect_metrics, plugin_manager, tiny_scenario

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "plugins.md").read_text()
HOOKS = hook_names()


def reference_headings() -> list[str]:
    return re.findall(r"^### (memtune_\w+)\s*$", DOC, flags=re.M)


def test_hook_list_is_every_spec_pluggy_knows():
    import pluggy

    pm = pluggy.PluginManager("memtune")
    pm.add_hookspecs(hookspecs)
    assert sorted(HOOKS) == sorted(n for n in vars(pm.hook) if not n.startswith("_"))
    assert "memtune_tick" in HOOKS and "memtune_register_knobs" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_in_the_reference(hook):
    assert hook in reference_headings(), f"docs/plugins.md has no '### {hook}' section"
    section = DOC.split(f"### {hook}\n", 1)[1].split("\n### ", 1)[0]
    assert f"`{hook}(" in section, f"the {hook} section does not show its signature"
    spec = getattr(hookspecs, hook)
    for arg in inspect.signature(spec).parameters:
        assert arg in section, f"the {hook} section does not mention its argument {arg!r}"
    if spec.memtune_spec["firstresult"]:
        assert "*firstresult*" in section


def test_reference_documents_no_hook_that_does_not_exist():
    headings = reference_headings()
    assert len(headings) == len(set(headings)), "a hook is documented twice"
    assert set(headings) <= set(HOOKS), f"documented but not a hook: {set(headings) - set(HOOKS)}"


# what each documented argument holds when the core calls a hook
ARG_TYPES = {
    "register": Callable,
    "scenario": Scenario,
    "host": Host,
    "now": float,
    "dt": float,
    "state": int,
    "need": np.ndarray,
    "pages": np.ndarray,
    "write": np.ndarray,
    "latency": np.ndarray,
    "kind": str,
    "vm": (int, type(None)),
    "data": dict,
    "result": dict,
}


class Recorder:
    """A plugin with every hook, recording the arguments of each call. It owns a page state
    registered without a fault handler, so its faults go through ``memtune_page_fault``."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: dict[str, list[dict]] = {}

    def record(self, hook: str, **kwargs) -> None:
        self.calls.setdefault(hook, []).append(kwargs)


def _reply(hook: str, kwargs: dict):
    """What the recorder answers: it registers its state and serves that state's faults."""
    if hook == "memtune_register_page_states":
        kwargs["register"]("recorded", read_fault=True, write_fault=True, fault_allocates=True)
    if hook == "memtune_page_fault" and kwargs["state"] == kwargs["host"].states.code("recorded"):
        kwargs["host"].pages.set_state(kwargs["pages"], RESIDENT)
        return np.zeros(kwargs["pages"].size)
    return None


def _recording_hook(hook: str):
    """A method taking exactly the spec's arguments by name (pluggy passes only those a function
    names), which records them."""
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    source = (
        f"def {hook}(self, {params}):\n"
        f"    kwargs = dict(locals()); del kwargs['self']\n"
        f"    self.record({hook!r}, **kwargs)\n"
        f"    return reply({hook!r}, kwargs)\n"
    )
    namespace: dict = {"reply": _reply}
    exec(compile(source, f"<recorder {hook}>", "exec"), namespace)  # test code, from the hook specs
    return hookimpl(namespace[hook])


for _hook in HOOKS:
    setattr(Recorder, _hook, _recording_hook(_hook))


@pytest.fixture(scope="module")
def recorded():
    """Every hook called at least once: a tiny run with the recorder's state on VM 0's pages, the
    tuner's knobs and a metrics snapshot."""
    rec = Recorder()
    pm = plugin_manager(rec)
    sc = tiny_scenario(duration="30s")
    registry_of(pm).knobs(sc)
    host = Host(sc, pm)
    engine = Engine(host)
    host.pages.set_state(np.arange(host.vm_pages[0]), host.states.code("recorded"))
    engine.run()
    collect_metrics(host)
    return rec.calls


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_called_with_its_documented_arguments(hook, recorded):
    documented = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert hook in recorded, f"{hook} was never called"
    for call in recorded[hook]:
        assert sorted(call) == sorted(documented), f"{hook} called with {sorted(call)}"
        for arg, value in call.items():
            expected = ARG_TYPES[arg]
            ok = callable(value) if expected is Callable else isinstance(value, expected)
            assert ok, f"{hook}: {arg} is {type(value).__name__}"
    if hook in ("memtune_page_fault", "memtune_fault_latency"):
        call = recorded[hook][0]
        assert call["pages"].dtype.kind == "i" and call["pages"].size > 0


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_spec_is_typed_and_documented(hook):
    spec = getattr(hookspecs, hook)
    assert spec.__doc__ and len(spec.__doc__.strip()) > 40, f"{hook} has no docstring"
    sig = inspect.signature(spec)
    assert sig.return_annotation is not inspect.Signature.empty, f"{hook} has no return type"
    for name, param in sig.parameters.items():
        assert param.annotation is not inspect.Parameter.empty, f"{hook}: argument {name} has no type"


def tutorial_files() -> dict[str, str]:
    blocks = re.findall(r"```python\n# file: (\S+)\n(.*?)```", DOC, flags=re.S)
    return dict(blocks)


@pytest.mark.slow
def test_tutorial_plugin_and_its_test_run_as_written(tmp_path, monkeypatch):
    files = tutorial_files()
    assert sorted(files) == ["memtune_zero_reclaim/__init__.py", "tests/test_zero_reclaim.py"]
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path / "tests"))
    try:
        tests = importlib.import_module("test_zero_reclaim")
        names = [n for n in dir(tests) if n.startswith("test_")]
        assert names == ["test_gives_back_resident_zero_pages", "test_scan_rate_zero_turns_it_off"]
        for name in names:
            getattr(tests, name)()
    finally:
        sys.modules.pop("test_zero_reclaim", None)
        sys.modules.pop("memtune_zero_reclaim", None)


def test_tutorial_entry_point_is_what_the_scaffolder_writes():
    from memtune.scaffold import render

    pyproject = render("zero-reclaim")["pyproject.toml"]
    snippet = re.search(r"```toml\n(\[project.entry-points.memtune\]\n.*?)```", DOC, flags=re.S).group(1)
    assert snippet in pyproject


@pytest.mark.slow
def test_readme_python_example_runs_as_written(capsys):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) <= 5
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.match(r"stall 0\.\d{4}, states \[('\w+'(, )?)+\]\n$", out), out


def test_readme_starts_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, flags=re.S).group(1).strip().splitlines()
    assert first_block == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/memtune optimize",
        "bash scripts/test",
    ]
