"""Fast Prometheus text exposition (format 0.0.4) of a host snapshot.

prometheus_client's ``generate_latest`` validates and formats every sample on its own (about 20 us
each); a 256-VM host has some 35 000 samples, so a scrape would take about a second. Here the
per-VM label prefixes (``memtune_vm_x{vm="web-01"} ``) are built once per set of VMs and cached, and
each scrape only formats the numbers and joins strings, family by family, column by column.

The output is the same exposition ``generate_latest`` produces for the same snapshot (same
families, types, help, samples and values; label order and float spelling may differ), which
tests/test_metrics.py checks by parsing both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from prometheus_client.core import Metric

from memtune.metrics.collector import LE_LABELS, Snapshot, Table, check_plugin_families, snapshot_tables
from memtune.metrics.families import VMFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


def format_value(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


_EXACT_INT = 2.0 ** 53


def format_values(values: np.ndarray) -> list[str]:
    """Text of each value: whole numbers as integers (bytes, counts: formatting an int is several
    times cheaper than a float's shortest repr), others as ``repr``; NaN, +Inf, -Inf as Prometheus
    spells them. Large columns repeat values (zeros, flat histogram buckets): each distinct value
    is formatted once."""
    if values.size > 64:
        uniq, inv = np.unique(values, return_inverse=True)
        if uniq.size * 2 < values.size:
            return np.array(_format(uniq), dtype=object)[inv.ravel()].tolist()
    return _format(values)


def _format(values: np.ndarray) -> list[str]:
    if values.size == 0:
        return []
    if np.isfinite(values).all():
        whole = np.rint(values)
        # formatting the whole list in C and splitting it beats a call per number
        if np.array_equal(whole, values) and np.abs(values).max() < _EXACT_INT:
            return str(whole.astype(np.int64).tolist())[1:-1].split(", ")
        return repr(values.tolist())[1:-1].split(", ")
    return [format_value(x) for x in values.tolist()]


def template_args(values: np.ndarray) -> tuple[bool, tuple]:
    """``values`` as the arguments of a ``%d`` (first item true) or ``%s`` template, spelled as
    :func:`format_values` spells them: Python ints for whole numbers (``%d`` writes an int without
    building a ``str`` first: 2-3x faster), else floats (``%s`` of a float is its ``repr``), or
    strings once NaN or an infinity is among them."""
    values = values.ravel()
    if values.size == 0:
        return True, ()
    if np.isfinite(values).all():
        whole = np.rint(values)
        if np.array_equal(whole, values) and np.abs(values).max() < _EXACT_INT:
            return True, tuple(whole.astype(np.int64).tolist())
        return False, tuple(values.tolist())
    return False, tuple(map(format_value, values.tolist()))


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"


def _templates(prefixes: Iterable[str]) -> tuple[str, str]:
    """The ``%d`` and the ``%s`` template of a block of series: one ``prefix value`` line each (a
    ``%`` in a label doubled)."""
    escaped = [p.replace("%", "%%") for p in prefixes]
    if not escaped:
        return "", ""
    return "%d\n".join(escaped) + "%d", "%s\n".join(escaped) + "%s"


class TextRenderer:
    """Renders snapshots; caches label prefixes for the VMs it has seen (one host at a time).

    Every per-VM block (a core table's column, a :class:`~memtune.metrics.families.VMFamily`
    column, the latency histogram) has a ``%d`` and a ``%s`` template per set of VMs, so a scrape
    formats it with a single ``template % values``.
    """

    def __init__(self) -> None:
        self._vms: tuple[str, ...] | None = None
        self._vm_labels: list[str] = []
        self._templates: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, str]] = {}
        self._hist: dict[str, tuple[str, str]] = {}
        self._plugin_prefixes: dict[tuple, str] = {}

    def _use_vms(self, vms: list[str]) -> None:
        key = tuple(vms)
        if key != self._vms:
            self._vms = key
            self._vm_labels = [f'vm="{escape_label(v)}"' for v in vms]
            self._templates = {}
            self._hist = {}
            self._plugin_prefixes = {}

    def _column(self, name: str, labels: dict[str, str], values: np.ndarray) -> str:
        """The series ``name{vm="...",labels...} value`` of one per-VM column, one line per VM."""
        key = (name, tuple(labels.items()))
        templates = self._templates.get(key)
        if templates is None:
            extra = "".join(f',{k}="{escape_label(str(v))}"' for k, v in labels.items())
            templates = self._templates[key] = _templates(f"{name}{{{vl}{extra}}} " for vl in self._vm_labels)
        ints, args = template_args(values)
        return templates[0 if ints else 1] % args

    def _hist_templates(self, name: str) -> tuple[str, str]:
        """Templates of a per-VM histogram: buckets and count ``%d`` and sum ``%s``; all ``%s``."""
        got = self._hist.get(name)
        if got is None:
            b, c, s = name + "_bucket", name + "_count", name + "_sum"
            mixed, text = [], []
            for vl in self._vm_labels:
                counts = [f'{b}{{{vl},le="{le}"}} ' for le in LE_LABELS] + [f"{c}{{{vl}}} "]
                counts = [p.replace("%", "%%") for p in counts]
                total = f"{s}{{{vl}}} ".replace("%", "%%") + "%s"
                mixed += [p + "%d" for p in counts] + [total]
                text += [p + "%s" for p in counts] + [total]
            got = self._hist[name] = ("\n".join(mixed), "\n".join(text))
        return got

    def _hist_block(self, name: str, cum: np.ndarray, sums: np.ndarray) -> str:
        """Cumulative bucket counts (VMs x exported buckets, +Inf last) and sums, one block."""
        ints, counts = template_args(cum)
        if ints and np.isfinite(sums).all():
            # counts as ints (%d), sums as floats (%s: repr), in exposition order row by row
            rows = np.empty((cum.shape[0], cum.shape[1] + 2), dtype=object)
            counts_2d = np.array(counts, dtype=object).reshape(cum.shape)
            rows[:, :-2] = counts_2d
            rows[:, -2] = counts_2d[:, -1]
            rows[:, -1] = sums.tolist()
            return self._hist_templates(name)[0] % tuple(rows.ravel().tolist())
        block = np.concatenate([cum, cum[:, -1:], sums[:, None]], axis=1)
        return self._hist_templates(name)[1] % tuple(format_values(block.ravel()))

    def table_lines(self, t: Table, out: list[str]) -> None:
        shown = t.name + "_total" if t.type == "counter" else t.name
        out.append(f"# HELP {shown} {escape_help(t.doc)}")
        out.append(f"# TYPE {shown} {t.type}")
        for name, labels, value in t.samples:
            out.append(f"{name}{_labels(labels)} {format_value(value)}")
        if self._vm_labels:
            for name, labels, values in t.per_vm:
                out.append(self._column(name, labels, values))
            if t.hist is not None:
                out.append(self._hist_block(t.name, *t.hist))

    def render(self, s: Snapshot) -> str:
        """The whole exposition of ``s``: core tables then the plugins' families."""
        self._use_vms(s.vm_names)
        tables = snapshot_tables(s)
        check_plugin_families(s, {t.name for t in tables})
        out: list[str] = []
        for t in tables:
            self.table_lines(t, out)
        for _, fam in s.plugin_families:
            cols = fam.fast_columns if isinstance(fam, VMFamily) else None
            if cols is not None and fam.vm_names == self._vms:
                # one template per column, prefixes cached; the same text metric_lines writes
                shown = fam.sample_name
                out.append(f"# HELP {shown} {escape_help(fam.documentation)}")
                out.append(f"# TYPE {shown} {fam.type}")
                if self._vm_labels:
                    out.extend(self._column(fam.sample_name, labels, values) for labels, values in cols)
            else:
                metric_lines([fam], out, self._plugin_prefixes)
        out.append("")
        return "\n".join(out)


def metric_lines(families: Iterable[Metric], out: list[str],
                 cache: dict[tuple, str] | None = None) -> None:
    """Text of prometheus_client families, as ``generate_latest`` writes them (format 0.0.4).

    ``cache`` keeps the ``name{labels} `` prefix of each series between scrapes.
    """
    prefixes = {} if cache is None else cache
    for fam in families:
        name, kind = fam.name, fam.type
        if kind == "counter":
            shown = name + "_total"
        elif kind == "info":
            shown, kind = name + "_info", "gauge"
        else:
            shown = name
            kind = {"stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}.get(kind, kind)
        doc = escape_help(fam.documentation)
        out.append(f"# HELP {shown} {doc}")
        out.append(f"# TYPE {shown} {kind}")
        samples = fam.samples
        specials = {name + "_created", name + "_gsum", name + "_gcount"}
        names = [smp.name for smp in samples]
        if specials.isdisjoint(names) and all(smp.timestamp is None for smp in samples):
            # the common case, column-wise: cached prefixes, numbers formatted in one go
            keys = list(zip(names, map(tuple, map(dict.items, [smp.labels for smp in samples])), strict=True))
            pre = list(map(prefixes.get, keys))
            for i, got in enumerate(pre):
                if got is None:
                    pre[i] = prefixes[keys[i]] = f"{names[i]}{_labels(samples[i].labels)} "
            values = np.array([smp.value for smp in samples], dtype=np.float64)
            out.extend(map(str.__add__, pre, format_values(values)))
            continue
        extra: dict[str, list[str]] = {}
        for smp in samples:
            key = (smp.name, tuple(smp.labels.items()))
            prefix = prefixes.get(key)
            if prefix is None:
                prefix = prefixes[key] = f"{smp.name}{_labels(smp.labels)} "
            value = float(smp.value)
            text = repr(value) if value - value == 0 else format_value(value)
            line = prefix + text
            if smp.timestamp is not None:
                line += f" {int(float(smp.timestamp) * 1000):d}"
            if smp.name in specials:
                extra.setdefault(smp.name[len(name):], []).append(line)
            else:
                out.append(line)
        for suffix, lines in sorted(extra.items()):
            out.append(f"# HELP {name}{suffix} {doc}")
            out.append(f"# TYPE {name}{suffix} gauge")
            out.extend(lines)


def render_snapshot(s: Snapshot) -> str:
    """One-off rendering (no cache kept)."""
    return TextRenderer().render(s)
