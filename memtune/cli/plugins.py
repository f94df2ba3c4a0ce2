"""``memtune plugins``: what is loaded, where it came from, and what each plugin adds.

For each plugin: name, version, source (``builtin``, ``entrypoint``, ``module`` for ``-p``), module,
the hooks it implements, the settings it declares, the tuner knobs it contributes (for SCENARIO,
default ``small``), its metric families, page states and page-out tiers. ``--settings`` adds every
setting's kind, default, bounds and the source of its default.
"""

from __future__ import annotations

from typing import Any

import click

from memtune.cli.common import echo_json, plugin_options


def _setting_dict(s: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name, "kind": s.kind, "default": s.default, "help": s.help,
                           "source": s.source, "tunable": s.tunable}
    if s.choices is not None:
        out["choices"] = list(s.choices)
    if s.minimum is not None:
        out["minimum"] = s.minimum
    if s.maximum is not None:
        out["maximum"] = s.maximum
    return out


def _knob_dict(k: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": k.name, "target": k.target, "kind": k.kind}
    if k.kind == "categorical":
        out["categories"] = list(k.categories or ())
    else:
        out.update(low=k.low, high=k.high, prior=k.prior)
    if k.help:
        out["help"] = k.help
    return out


def describe_plugins(pm: Any, scenario: Any = None, *, settings: bool = False) -> list[dict[str, Any]]:
    """One dict per loaded plugin, in load order (what ``memtune plugins --json`` prints)."""
    from memtune.core.registry import registry_of

    contrib = registry_of(pm).contributions(scenario)
    rows = []
    for name, info in pm.info.items():
        c = contrib[name]
        rows.append({
            "name": name,
            "version": info.version,
            "source": info.source,
            "module": info.module,
            "hooks": list(info.hooks),
            "settings": [_setting_dict(s) for s in c.settings] if settings else [s.name for s in c.settings],
            "knobs": [_knob_dict(k) for k in c.knobs],
            "metrics": c.metrics,
            "page_states": [p["name"] for p in c.page_states],
            "page_out": c.page_out,
        })
    return rows


def _fmt_default(s: dict[str, Any]) -> str:
    from memtune.units import format_duration, format_size

    v = s["default"]
    if s["kind"] == "seconds" and isinstance(v, int | float):
        return format_duration(v)
    if s["kind"] == "bytes" and isinstance(v, int | float):
        return format_size(v)
    if s["kind"] == "percent":
        return f"{v} %"
    return str(v)


def _knob_text(k: dict[str, Any]) -> str:
    where = "per VM" if k["target"] == "vm" else "host"
    rng = "{" + ", ".join(map(str, k["categories"])) + "}" if k["kind"] == "categorical" else \
        f"[{k['low']:g}, {k['high']:g}]"
    return f"{k['name']} ({where}, {k['kind']} {rng})"


def format_plugins(rows: list[dict[str, Any]], *, settings: bool = False) -> str:
    lines = []
    for r in rows:
        lines.append(f"{r['name']}  {r['version'] or '-'}  ({r['source']}: {r['module']})")
        lines.append(f"  hooks:    {', '.join(h.removeprefix('memtune_') for h in r['hooks']) or '-'}")
        if r["page_states"]:
            lines.append(f"  states:   {', '.join(r['page_states'])}")
        if r["page_out"]:
            lines.append("  page-out: " + ", ".join(f"{t['name']} (priority {t['priority']})"
                                                  for t in r["page_out"]))
        if r["knobs"]:
            lines.append(f"  knobs:    {', '.join(_knob_text(k) for k in r['knobs'])}")
        if r["metrics"]:
            lines.append(f"  metrics:  {', '.join(m['name'] for m in r['metrics'])}")
        if settings:
            for s in r["settings"]:
                lines.append(f"  setting   {s['name']} = {_fmt_default(s)}  [{s['kind']}]"
                             f"{'  tunable' if s['tunable'] else ''}")
                lines.append(f"            {s['help']}")
                lines.append(f"            source: {s['source'] or '-'}")
        elif r["settings"]:
            lines.append(f"  settings: {', '.join(r['settings'])}")
    return "\n".join(lines)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.option("--settings", "show_settings", is_flag=True,
              help="Show every setting with its kind, default and the source of the default.")
@click.option("--scenario", "scenario_ref", metavar="SCENARIO",
              help="Scenario the plugins' knobs are collected for (default: small).")
@plugin_options
def cli(as_json: bool, show_settings: bool, scenario_ref: str | None, disable: tuple[str, ...],
        plugins: tuple[str, ...]) -> None:
    """List the loaded plugins: version, source, hooks, and the settings, knobs and metrics they add.

    Plugins come from memtune itself (builtin), from installed packages with an entry point in
    the ``memtune`` group, and from ``-p module.path``. MEMTUNE_PLUGINS (comma-separated names)
    keeps only those plugins; MEMTUNE_DISABLE_PLUGINS and --disable-plugin block names.
    """
    from memtune.core.plugins import build_plugin_manager
    from memtune.core.scenario import load_scenario

    pm = build_plugin_manager(disable=disable, modules=plugins)
    scenario = load_scenario(scenario_ref) if scenario_ref else None
    rows = describe_plugins(pm, scenario, settings=show_settings)
    if as_json:
        echo_json(rows)
    else:
        click.echo(format_plugins(rows, settings=show_settings))
