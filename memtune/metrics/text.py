"""Fast Prometheus text exposition (format 0.0.4) of a host snapshot.

prometheus_client's ``generate_latest`` validates and formats every sample on its own (about 20 us
each); a 256-VM host has some 35 000 samples, so a scrape would take about a second. Here the
per-VM label prefixes (``memtune_vm_x{vm="web-01"} ``) are built once per set of VMs and cached, and
each scrape only formats the numbers into cached templates, family by family, column by column.

The output is the same exposition ``generate_latest`` produces for the same snapshot (same
families, types, help, samples and values; label order and float spelling may differ), which
tests/test_metrics.py checks by parsing both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from prometheus_client.core import Metric

from memtune.metrics.families import VMFamily
from memtune.metrics.model import Snapshot, Table, check_plugin_families
from memtune.metrics.tables import snapshot_tables

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


def template_args(values: np.ndarray) -> tuple[str, tuple]:
    """``values`` as the arguments of a bytes ``%`` template, spelled as :func:`format_values`
    spells them, and the conversion to use: ``"d"`` with Python ints for whole numbers (``%d``
    writes an int without building a ``str``: 2-3x faster), ``"r"`` with floats otherwise (their
    ``repr``), ``"s"`` with ASCII bytes once NaN or an infinity is among them."""
    values = values.ravel()
    if values.size == 0:
        return "d", ()
    if np.isfinite(values).all():
        whole = np.rint(values)
        if np.array_equal(whole, values) and np.abs(values).max() < _EXACT_INT:
            return "d", tuple(whole.astype(np.int64).tolist())
        return "r", tuple(values.tolist())
    return "s", tuple(format_value(x).encode("ascii") for x in values.tolist())


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"


class _Block:
    """The series prefixes (``name{labels} ``) of a per-VM block and its ``%`` templates: one
    ``prefix value`` line per series, UTF-8, a ``%`` in a label doubled; built on first use."""

    def __init__(self, prefixes: Iterable[str], convs: Iterable[str] | None = None) -> None:
        self.prefixes = [p.replace("%", "%%").encode() for p in prefixes]
        self.convs = None if convs is None else list(convs)   # per series, for mixed blocks
        self.templates: dict[str, bytes] = {}
        self.last: tuple[bytes, bytes] = (b"", b"")   # the values (raw) last formatted, their text

    def template(self, conv: str) -> bytes:
        got = self.templates.get(conv)
        if got is None:
            if not self.prefixes:
                got = b""
            elif conv == "mixed":
                got = b"\n".join(
                    p + b"%" + c.encode() for p, c in zip(self.prefixes, self.convs, strict=True)
                )
            else:
                sep = b"%" + conv.encode()
                got = (sep + b"\n").join(self.prefixes) + sep
            self.templates[conv] = got
        return got


class TextRenderer:
    """Renders snapshots; caches label prefixes for the VMs it has seen (one host at a time).

    Every per-VM block (a core table's column, a :class:`~memtune.metrics.families.VMFamily`
    column, the latency histogram) is a bytes ``%`` template per set of VMs, so a scrape formats
    it with a single ``template % values`` (bytes formatting finds the next ``%`` with ``memchr``;
    ``str`` formatting walks the template character by character).
    """

    def __init__(self, latency_buckets: str = "full") -> None:
        self.latency_buckets = latency_buckets
        self._vms: tuple[str, ...] | None = None
        self._vm_labels: list[str] = []
        self._blocks: dict[tuple[str, tuple[tuple[str, str], ...]], _Block] = {}
        self._hist: dict[tuple[str, tuple[str, ...]], _Block] = {}
        self._plugin_prefixes: dict[tuple, str] = {}

    def _use_vms(self, vms: list[str]) -> None:
        key = tuple(vms)
        if key != self._vms:
            self._vms = key
            self._vm_labels = [f'vm="{escape_label(v)}"' for v in vms]
            self._blocks = {}
            self._hist = {}
            self._plugin_prefixes = {}

    def _column(self, name: str, labels: dict[str, str], values: np.ndarray) -> bytes:
        """The series ``name{vm="...",labels...} value`` of one per-VM column, one line per VM."""
        key = (name, tuple(labels.items()))
        block = self._blocks.get(key)
        if block is None:
            extra = "".join(f',{k}="{escape_label(str(v))}"' for k, v in labels.items())
            block = self._blocks[key] = _Block(f"{name}{{{vl}{extra}}} " for vl in self._vm_labels)
        raw = values.tobytes()
        if raw == block.last[0]:  # unchanged since the last scrape (configuration, idle plugins)
            return block.last[1]
        conv, args = template_args(values)
        text = block.template(conv) % args
        block.last = (raw, text)
        return text

    def _hist_block(self, name: str, le: tuple[str, ...], cum: np.ndarray, sums: np.ndarray) -> bytes:
        """Cumulative bucket counts (VMs x exported buckets, +Inf last) and sums, one block."""
        block = self._hist.get((name, le))
        if block is None:
            b, c, s = name + "_bucket", name + "_count", name + "_sum"
            prefixes: list[str] = []
            for vl in self._vm_labels:
                prefixes.extend(f'{b}{{{vl},le="{x}"}} ' for x in le)
                prefixes.append(f"{c}{{{vl}}} ")
                prefixes.append(f"{s}{{{vl}}} ")
            convs = (["d"] * (len(le) + 1) + ["r"]) * len(self._vm_labels)
            block = self._hist[(name, le)] = _Block(prefixes, convs)
        # rows in exposition order: buckets, count (= the +Inf bucket), sum
        rows = np.empty((cum.shape[0], cum.shape[1] + 2), dtype=object)
        conv, counts = template_args(cum)
        if conv == "d" and np.isfinite(sums).all():  # counts as ints (%d), sums as floats (%r)
            rows[:, :-2] = np.array(counts, dtype=object).reshape(cum.shape)
            rows[:, -2] = rows[:, -3]
            rows[:, -1] = sums.tolist()
            return block.template("mixed") % tuple(rows.ravel().tolist())
        rows[:, :-2] = np.array(format_values(cum.ravel()), dtype=object).reshape(cum.shape)
        rows[:, -2] = rows[:, -3]
        rows[:, -1] = [format_value(x) for x in sums.tolist()]
        return block.template("s") % tuple(v.encode("ascii") for v in rows.ravel().tolist())

    def table_lines(self, t: Table, out: list[bytes]) -> None:
        shown = t.name + "_total" if t.type == "counter" else t.name
        head = [f"# HELP {shown} {escape_help(t.doc)}", f"# TYPE {shown} {t.type}"]
        head += [f"{name}{_labels(labels)} {format_value(value)}" for name, labels, value in t.samples]
        out.append("\n".join(head).encode())
        if self._vm_labels:
            for name, labels, values in t.per_vm:
                out.append(self._column(name, labels, values))
            if t.hist is not None:
                out.append(self._hist_block(t.name, t.le, *t.hist))

    def render_bytes(self, s: Snapshot) -> bytes:
        """The whole exposition of ``s`` in UTF-8: core tables then the plugins' families."""
        self._use_vms(s.vm_names)
        tables = snapshot_tables(s, self.latency_buckets)
        check_plugin_families(s, {t.name for t in tables})
        out: list[bytes] = []
        for t in tables:
            self.table_lines(t, out)
        for _, fam in s.plugin_families:
            cols = fam.fast_columns if isinstance(fam, VMFamily) else None
            if cols is not None and fam.vm_names == self._vms:
                # one template per column, prefixes cached; the same text metric_lines writes
                shown = fam.sample_name
                out.append(
                    f"# HELP {shown} {escape_help(fam.documentation)}\n# TYPE {shown} {fam.type}".encode()
                )
                if self._vm_labels:
                    out.extend(self._column(fam.sample_name, labels, values) for labels, values in cols)
            else:
                lines: list[str] = []
                metric_lines([fam], lines, self._plugin_prefixes)
                out.append("\n".join(lines).encode())
        out.append(b"")
        return b"\n".join(out)

    def render(self, s: Snapshot) -> str:
        """The whole exposition of ``s`` as text."""
        return self.render_bytes(s).decode("utf-8")


def metric_lines(families: Iterable[Metric], out: list[str], cache: dict[tuple, str] | None = None) -> None:
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
                extra.setdefault(smp.name[len(name) :], []).append(line)
            else:
                out.append(line)
        for suffix, lines in sorted(extra.items()):
            out.append(f"# HELP {name}{suffix} {doc}")
            out.append(f"# TYPE {name}{suffix} gauge")
            out.extend(lines)


def render_snapshot(s: Snapshot) -> str:
    """One-off rendering (no cache kept)."""
    return TextRenderer().render(s)
