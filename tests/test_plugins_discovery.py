"""Plugin discovery: entry points (the installed example package and a distribution made on the
fly), -p module paths, the MEMTUNE_PLUGINS allow-list and the MEMTUNE_DISABLE_PLUGINS block-list,
and what `memtune plugins` shows for each."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import load_scenario
from memtune.errors import UserError

BUILTINS = ["core", "balloon", "tps", "ksm", "compression", "swap", "encryption", "audit"]

ACME = '''
from memtune import hookimpl
from memtune.core.settings import Setting


@hookimpl
def memtune_register_settings(register):
    register(Setting("acme.level", "int", 3, "how acme", "test fixture"))
'''


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("MEMTUNE_PLUGINS", raising=False)
    monkeypatch.delenv("MEMTUNE_DISABLE_PLUGINS", raising=False)


@pytest.fixture
def acme(tmp_path, monkeypatch):
    """An installed distribution `acme-mem` 2.5 with entry point `acme = acme_mem` (on sys.path)."""
    (tmp_path / "acme_mem").mkdir()
    (tmp_path / "acme_mem" / "__init__.py").write_text(ACME)
    info = tmp_path / "acme_mem-2.5.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-mem\nVersion: 2.5\n")
    (info / "entry_points.txt").write_text("[memtune]\nacme = acme_mem\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def invoke(*args, env=None):
    return CliRunner().invoke(main_group, list(args), env=env)


def test_installed_example_package_is_found_through_its_entry_point():
    pm = build_plugin_manager()
    info = pm.info["page_reporting"]
    assert (info.source, info.module, info.version) == ("entrypoint", "memtune_page_reporting", "0.1.0")
    assert pm.plugin_names()[: len(BUILTINS)] == BUILTINS
    assert "memtune_tick" in info.hooks and "memtune_register_knobs" in info.hooks


def test_a_distribution_on_sys_path_is_loaded_with_its_version(acme):
    pm = build_plugin_manager()
    info = pm.info["acme"]
    assert (info.source, info.version, info.hooks) == ("entrypoint", "2.5", ["memtune_register_settings"])


def test_allow_list_keeps_only_named_plugins_and_the_core(acme, monkeypatch):
    monkeypatch.setenv("MEMTUNE_PLUGINS", "tps, acme")
    assert build_plugin_manager().plugin_names() == ["core", "tps", "acme"]


def test_block_list_and_disable_remove_plugins(acme, monkeypatch):
    monkeypatch.setenv("MEMTUNE_DISABLE_PLUGINS", "acme,swap")
    names = build_plugin_manager(disable=["tps"]).plugin_names()
    assert "acme" not in names and "swap" not in names and "tps" not in names
    assert {"core", "balloon", "compression", "page_reporting"} <= set(names)


def test_block_list_wins_over_allow_list(acme, monkeypatch):
    monkeypatch.setenv("MEMTUNE_PLUGINS", "tps,acme")
    monkeypatch.setenv("MEMTUNE_DISABLE_PLUGINS", "acme")
    assert build_plugin_manager().plugin_names() == ["core", "tps"]


def test_unknown_names_are_user_errors(monkeypatch):
    monkeypatch.setenv("MEMTUNE_PLUGINS", "tps,nosuch")
    with pytest.raises(UserError, match=r"MEMTUNE_PLUGINS: unknown plugin 'nosuch'"):
        build_plugin_manager()
    monkeypatch.delenv("MEMTUNE_PLUGINS")
    with pytest.raises(UserError, match=r"unknown plugin 'swp' in --disable-plugin"):
        build_plugin_manager(disable=["swp"])
    with pytest.raises(UserError, match="the core cannot be disabled"):
        build_plugin_manager(disable=["core"])
    r = invoke("plugins", env={"MEMTUNE_DISABLE_PLUGINS": "nosuch"})
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "memtune: error: MEMTUNE_DISABLE_PLUGINS: unknown plugin 'nosuch' (known: audit, "
    )
    assert "page_reporting" in lines[0]


def test_local_module_with_dash_p(tmp_path, monkeypatch):
    (tmp_path / "mylocal.py").write_text(ACME)
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = build_plugin_manager(modules=["mylocal"])
    assert pm.info["mylocal"].source == "module" and pm.info["mylocal"].version is None
    with pytest.raises(UserError, match="plugin module 'no_such_mod' cannot be imported"):
        build_plugin_manager(modules=["no_such_mod"])
    r = invoke("plugins", "--json", "-p", "mylocal", "--disable-plugin", "tps")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert "tps" not in rows
    assert rows["mylocal"]["source"] == "module" and rows["mylocal"]["settings"] == ["acme.level"]


def test_memtune_plugins_json_shows_the_example_with_knobs_metrics_and_settings():
    r = invoke("plugins", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    pr = rows["page_reporting"]
    assert (pr["version"], pr["source"], pr["module"]) == ("0.1.0", "entrypoint", "memtune_page_reporting")
    assert pr["knobs"] == [
        {
            "name": "page_reporting.enabled",
            "target": "host",
            "kind": "categorical",
            "categories": [False, True],
            "help": "virtio-balloon free page reporting (libvirt freePageReporting)",
        }
    ]
    assert [m["name"] for m in pr["metrics"]] == ["memtune_page_reporting_reported_bytes_total"]
    assert pr["settings"] == [
        "page_reporting.enabled",
        "page_reporting.delay",
        "page_reporting.capacity",
        "page_reporting.order",
    ]
    assert sorted(pr["hooks"]) == [
        "memtune_collect_metrics",
        "memtune_configure",
        "memtune_register_knobs",
        "memtune_register_metrics",
        "memtune_register_settings",
        "memtune_tick",
    ]
    assert rows["swap"]["page_out"] == [{"name": "swap", "priority": 90}]
    assert rows["core"]["version"] == rows["swap"]["version"]


@pytest.mark.slow
def test_memtune_plugins_text_and_settings():
    r = invoke("plugins")
    assert r.exit_code == 0, r.output
    assert "page_reporting  0.1.0  (entrypoint: memtune_page_reporting)" in r.output
    assert "  knobs:    page_reporting.enabled (host, categorical {False, True})" in r.output
    r = invoke("plugins", "--settings", "--json")
    rows = {row["name"]: row for row in json.loads(r.output)}
    delay = {s["name"]: s for s in rows["page_reporting"]["settings"]}["page_reporting.delay"]
    assert delay["default"] == 2.0 and delay["kind"] == "seconds"
    assert "PAGE_REPORTING_DELAY" in delay["source"]
    r = invoke("plugins", "--settings")
    assert "  setting   page_reporting.delay = 2s  [seconds]" in r.output
    # every setting of every plugin names the source of its default
    assert all(s["source"] for row in rows.values() for s in row["settings"]), [
        s["name"] for row in rows.values() for s in row["settings"] if not s["source"]
    ]


@pytest.mark.slow
def test_example_metric_reaches_the_collector_and_its_knob_the_tuner_space():
    from memtune.core.simulation import build_host
    from memtune.metrics.collector import host_registry
    from memtune.testing import tiny_scenario
    from memtune.tuner.space import build_space

    sc = tiny_scenario(
        workload={"kind": "boot-storm", "allocated": 0.5, "wss": 0.2, "boot_time": "20s"},
        memory="8 GiB",
        settings={"page_reporting.enabled": True},
    )
    host = build_host(sc)
    from memtune.core.engine import Engine

    Engine(host).run(40.0)
    reported = host.plugin_data["page_reporting"]["reported"]
    assert reported.min() > 0
    reg = host_registry(host)
    assert reg.get_sample_value("memtune_page_reporting_reported_bytes_total", {"vm": "vm-02"}) == reported[1]
    space = build_space(load_scenario("small"), build_plugin_manager())
    assert "page_reporting.enabled" in space.names
    assert {d.knob.owner for d in space.dimensions if d.name == "page_reporting.enabled"} == {
        "page_reporting"
    }


def test_plugins_help_names_the_environment_variables():
    r = invoke("plugins", "--help")
    assert "MEMTUNE_PLUGINS" in r.output and "MEMTUNE_DISABLE_PLUGINS" in r.output


def _dist(root, dist, version, entry, value, module_text=ACME):
    module = value.split(":")[0]
    (root / module).mkdir(exist_ok=True)
    (root / module / "__init__.py").write_text(module_text)
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[memtune]\n{entry} = {value}\n")


def test_entry_point_named_like_a_builtin_is_skipped_with_a_warning_naming_its_package(
    tmp_path, monkeypatch, capsys
):
    _dist(tmp_path, "fake_swap", "1.0", "swap", "fake_swap")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("memtune.core.plugins._warned", set())
    pm = build_plugin_manager()
    assert pm.info["swap"].source == "builtin"
    assert (
        "memtune: warning: skipped plugin 'swap' of package 'fake_swap' (fake_swap): it takes the name of a "
        "built-in plugin" in capsys.readouterr().err
    )


def test_two_packages_claiming_one_name_keep_the_first_the_same_one_twice_is_one(
    tmp_path, monkeypatch, capsys
):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _dist(a, "acme_one", "1.0", "acme", "acme_one")
    _dist(b, "acme_one", "1.0", "acme", "acme_one")
    monkeypatch.syspath_prepend(str(a))
    monkeypatch.syspath_prepend(str(b))
    assert build_plugin_manager().plugin_names().count("acme") == 1
    assert "warning" not in capsys.readouterr().err
    c = tmp_path / "c"
    c.mkdir()
    _dist(c, "acme_two", "2.0", "acme", "acme_two")
    monkeypatch.syspath_prepend(str(c))
    monkeypatch.setattr("memtune.core.plugins._warned", set())
    pm = build_plugin_manager()
    assert pm.info["acme"].module == "acme_two" and pm.info["acme"].version == "2.0"
    assert (
        "skipped plugin 'acme' of package 'acme_one' (acme_one): package 'acme_two' (acme_two) already "
        "defines a plugin of that name" in capsys.readouterr().err
    )


def test_memtune_optimize_searches_the_example_knob(tmp_path):
    # a --knobs pattern that matches nothing makes optimize list the space it would search, before
    # any simulation runs
    r = invoke("optimize", "small", "--knobs", "no_such_knob", "--out", str(tmp_path / "out"), "--no-plots")
    assert r.exit_code == 2, r.output
    listed = r.output.split("(knobs: ", 1)[1].rstrip(")\n").split(", ")
    assert "page_reporting.enabled" in listed and "Mem.IdleTax" in listed
