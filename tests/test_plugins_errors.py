"""Broken plugins: mistakes caught at load (misspelled hook, wrong argument, missing @hookimpl) and
failures inside hooks (one line naming the plugin and the hook, exit 1; the traceback with --debug)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from memtune import hookimpl
from memtune.cli import main_group
from memtune.core.engine import Engine
from memtune.core.host import Host
from memtune.core.plugins import build_plugin_manager
from memtune.errors import PluginError, UserError
from memtune.testing import plugin_manager, run_with, tiny_scenario

TINY_TOML = '''
name = "tiny"
duration = "20s"
tick = "2s"
seed = 3
[host]
memory = "4 GiB"
page_scale = 16
[workloads.w]
allocated = 0.5
wss = 0.2
[[vm]]
name = "vm"
count = 2
memory = "1 GiB"
workload = "w"
'''

BOOM = '''
from memtune import hookimpl


@hookimpl
def memtune_tick(host, now, dt):
    if now >= 6:
        raise RuntimeError("disk on fire at t=%g" % now)
'''


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write plugin modules into a folder on sys.path (and PYTHONPATH for subprocesses)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MEMTUNE_PLUGINS", raising=False)
    monkeypatch.delenv("MEMTUNE_DISABLE_PLUGINS", raising=False)
    (tmp_path / "tiny.toml").write_text(TINY_TOML)

    def write(name: str, text: str) -> str:
        (tmp_path / f"{name}.py").write_text(text)
        return name

    write.dir = tmp_path
    return write


def memtune(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memtune.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_misspelled_hook_is_an_error_naming_the_plugin_and_the_right_name(modules):
    modules("typo", "from memtune import hookimpl\n\n@hookimpl\ndef memtune_tikc(host, now, dt):\n    pass\n")
    with pytest.raises(UserError) as err:
        build_plugin_manager(modules=["typo"])
    assert str(err.value) == "plugin 'typo': unknown hook 'memtune_tikc' (did you mean memtune_tick?)"
    r = CliRunner().invoke(main_group, ["simulate", str(modules.dir / "tiny.toml"), "-p", "typo"])
    assert r.exit_code == 2
    assert (
        r.output
        == "memtune: error: plugin 'typo': unknown hook 'memtune_tikc' (did you mean memtune_tick?)\n"
    )


def test_argument_the_spec_does_not_have_is_an_error(modules):
    modules("badarg", "from memtune import hookimpl\n\n@hookimpl\ndef memtune_tick(host, when):\n    pass\n")
    with pytest.raises(
        UserError,
        match=r"^plugin 'badarg': .*memtune_tick.*\{'when'\}.*can not be found in the "
        r"hookspec$",
    ):
        build_plugin_manager(modules=["badarg"])


def test_hook_named_function_without_hookimpl_is_an_error(modules):
    modules("nodeco", "def memtune_tick(host, now, dt):\n    pass\n")
    with pytest.raises(UserError, match=r"^plugin 'nodeco': memtune_tick is not marked @hookimpl"):
        build_plugin_manager(modules=["nodeco"])


def test_object_plugins_are_validated_too():
    class Typo:
        @hookimpl
        def memtune_reclam(self, host, state, need):
            pass

    with pytest.raises(
        UserError,
        match=r"plugin 'typo': unknown hook 'memtune_reclam' \(did you mean "
        r"memtune_reclaim\?\)",
    ):
        plugin_manager(Typo())


def test_raising_hook_stops_the_run_with_plugin_and_hook_named():
    class Boom:
        name = "boom"

        @hookimpl
        def memtune_access_overhead(self, host):
            raise ZeroDivisionError("bad rate")

    with pytest.raises(PluginError) as err:
        run_with(Boom(), builtins=False, duration=4.0)
    e = err.value
    assert (e.plugin, e.hook, type(e.cause)) == ("boom", "memtune_access_overhead", ZeroDivisionError)
    assert str(e) == "plugin 'boom' failed in hook memtune_access_overhead: ZeroDivisionError: bad rate"


def test_raising_registration_hook_and_page_out_tier_are_named_too():
    class BadSettings:
        name = "badsettings"

        @hookimpl
        def memtune_register_settings(self, register):
            raise KeyError("oops")

    with pytest.raises(PluginError, match=r"plugin 'badsettings' failed in hook memtune_register_settings"):
        Host(tiny_scenario(), plugin_manager(BadSettings(), builtins=False))

    class BadTier:
        name = "badtier"

        @hookimpl
        def memtune_register_page_out(self, register):
            register("leaky", 50, lambda host, pages: pages[10**9])

    host = Host(tiny_scenario(), plugin_manager(BadTier(), builtins=False))
    Engine(host)
    with pytest.raises(
        PluginError, match=r"plugin 'badtier' failed in hook page-out tier 'leaky': IndexError"
    ):
        host.page_out(np.arange(3))


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_1_and_the_traceback_with_debug(modules):
    modules("boom", BOOM)
    r = memtune("simulate", "tiny.toml", "-p", "boom", cwd=modules.dir)
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    assert r.stderr == (
        "memtune: error: plugin 'boom' failed in hook memtune_tick: RuntimeError: disk on fire "
        "at t=6 (run with --debug for the traceback)\n"
    )
    r = memtune("--debug", "simulate", "tiny.toml", "-p", "boom", cwd=modules.dir)
    assert r.returncode == 1
    assert r.stderr.startswith("Traceback (most recent call last):")
    assert (
        'boom.py", line 8, in memtune_tick\n    raise RuntimeError("disk on fire at t=%g" % now)' in r.stderr
    )
    assert "RuntimeError: disk on fire at t=6" in r.stderr
    assert "PluginError: plugin 'boom' failed in hook memtune_tick" in r.stderr


# --- -p modules that cannot be used, installed plugins that collide, names `plugin new` refuses ----


@pytest.mark.slow
@pytest.mark.parametrize(
    "text, says",
    [
        (
            "raise RuntimeError('no config file')\n",
            "plugin 'broken' failed while importing: RuntimeError: no config file",
        ),
        ("def memtune_tick(host, now:\n", "plugin 'broken' failed while importing: SyntaxError: "),
        (
            "import no_such_dependency\n",
            "plugin 'broken' failed while importing: ModuleNotFoundError: No module named "
            "'no_such_dependency'",
        ),
    ],
)
def test_module_that_fails_while_importing_is_one_line_exit_1_and_the_traceback_with_debug(
    modules, text, says
):
    modules("broken", text)
    r = memtune("simulate", "tiny.toml", "-p", "broken", cwd=modules.dir)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(f"memtune: error: {says}") and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.endswith(" (run with --debug for the traceback)\n")
    r = memtune("--debug", "simulate", "tiny.toml", "-p", "broken", cwd=modules.dir)
    assert r.returncode == 1 and r.stderr.startswith("Traceback (most recent call last):"), r.stderr


def test_syntax_error_names_the_file_and_line(modules):
    modules("broken", "\n\ndef f(:\n")
    with pytest.raises(PluginError, match=r"invalid syntax \(.*broken\.py, line 3\)"):
        build_plugin_manager(modules=["broken"], entrypoints=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "given, hint",
    [
        ("./broken.py", "give -p 'broken'"),
        ("broken.py", "give -p 'broken'"),
        ("/abs/dir/x-y.py", "not a file"),
        ("a b", "names joined by dots"),
        ("x" * 300, "cannot be imported"),
    ],
)
def test_file_path_or_bad_module_name_is_a_usage_error(modules, given, hint):
    modules("broken", "")
    r = CliRunner().invoke(main_group, ["simulate", str(modules.dir / "tiny.toml"), "-p", given])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("memtune: error: -p: plugin module ") and r.output.count("\n") == 1, r.output
    assert hint in r.output


def _installed(root, dist: str, entry: str, module: str, text: str = "") -> None:
    """A package installed on ``root`` (a sys.path entry) with a `memtune` entry point."""
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text(text)
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[memtune]\n{entry} = {module}\n")


@pytest.mark.slow
def test_installed_plugin_named_like_a_builtin_is_skipped_and_commands_keep_working(modules):
    # what `memtune plugin new balloon` + `pip install -e` made before names were reserved
    _installed(
        modules.dir,
        "memtune-balloon",
        "balloon",
        "memtune_balloon",
        "raise RuntimeError('must never be imported')\n",
    )
    _installed(modules.dir, "memtune-other", "balloon_two", "memtune_other")
    _installed(modules.dir, "memtune-clash", "balloon_two", "memtune_clash")
    r = memtune("simulate", "tiny.toml", "--duration", "4s", cwd=modules.dir)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    warnings = r.stderr.splitlines()
    assert (
        "memtune: warning: skipped plugin 'balloon' of package 'memtune-balloon' (memtune_balloon): it takes "
        "the name of a built-in plugin; rename its entry point (to replace the built-in, disable 'balloon' "
        "and load yours under another name)" in warnings
    )
    assert any(
        w.startswith("memtune: warning: skipped plugin 'balloon_two' of package ")
        and "already defines a plugin of that name" in w
        for w in warnings
    ), warnings
    r = memtune("plugins", "--json", cwd=modules.dir)
    assert r.returncode == 0, r.stderr
    listed = r.stdout
    assert '"balloon"' in listed and '"balloon_two"' in listed and '"module": "memtune_balloon"' not in listed


@pytest.mark.parametrize(
    "name, says",
    [
        ("balloon", "'balloon' is the name of a built-in plugin"),
        ("tps", "'tps' is the name of a built-in plugin"),
        (
            "page-reporting",
            "'page-reporting' is the name of the plugin of installed package 'memtune-page-reporting'",
        ),
        ("a" * 300, "plugin names are at most 64 characters; got 300"),
    ],
)
def test_plugin_new_refuses_names_that_are_taken_or_too_long(tmp_path, name, says):
    r = CliRunner().invoke(main_group, ["plugin", "new", name, "--dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert r.output == f"memtune: error: NAME: {says}" + (
        "; an installed plugin of that name would be skipped: choose another name\n"
        if "name of" in says
        else "\n"
    )
    assert list(tmp_path.iterdir()) == []


# --- the test command keeps to its own environment ---------------------------------------------------

STUB = """#!/usr/bin/env bash
echo "$0 $*" >> "$LOG"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"
  for tool in python ruff; do cp "$STUB" "$3/bin/$tool"; chmod +x "$3/bin/$tool"; done
fi
exit 0
"""


def test_scripts_test_installs_into_its_own_venv_and_never_touches_dot_venv(tmp_path):
    """`bash scripts/test` installs the example plugin: it must not do that into the .venv the
    README's first command made (the plugin's knob would join that user's search space)."""
    repo = Path(__file__).resolve().parent.parent
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(repo / "scripts" / "test", copy / "scripts" / "test")
    (copy / "examples" / "memtune-demo").mkdir(parents=True)
    (copy / "examples" / "memtune-demo" / "pyproject.toml").write_text("[project]\nname = 'memtune-demo'\n")
    user_venv = copy / ".venv" / "bin"
    user_venv.mkdir(parents=True)
    (user_venv / "python").write_text('#!/bin/sh\necho touched > "$(dirname "$0")/../TOUCHED"\nexit 1\n')
    (user_venv / "python").chmod(0o755)
    before = sorted(str(p.relative_to(copy)) for p in (copy / ".venv").rglob("*"))
    stubs = tmp_path / "bin"
    stubs.mkdir()
    stub = stubs / "python3"
    stub.write_text(STUB)
    stub.chmod(0o755)
    for tool in ("prometheus", "promtool", "swapon", "mkswap", "apt-get", "sudo", "systemctl", "service"):
        (stubs / tool).write_text("#!/bin/sh\nexit 0\n")
        (stubs / tool).chmod(0o755)
    log = tmp_path / "log"
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "LOG": str(log), "STUB": str(stub), "HOME": str(tmp_path)}
    r = subprocess.run(
        ["bash", str(copy / "scripts" / "test"), "-k", "nothing"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert any(c.endswith("-m venv .venv-test") for c in calls), calls
    assert any(".venv-test/bin/python -m pip install -q -e examples/memtune-demo/" in c for c in calls), calls
    assert not any("/.venv/" in c or c.split()[0].startswith(".venv/") for c in calls), calls
    assert sorted(str(p.relative_to(copy)) for p in (copy / ".venv").rglob("*")) == before
    # MEMTUNE_VENV still picks another environment
    log.unlink()
    r = subprocess.run(
        ["bash", str(copy / "scripts" / "test")],
        env={**env, "MEMTUNE_VENV": str(tmp_path / "v")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and f"-m venv {tmp_path / 'v'}" in log.read_text()
