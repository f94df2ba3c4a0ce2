"""Per-VM metric families for ``memtune_collect_metrics``, held as numpy arrays.

``GaugeMetricFamily.add_metric`` costs about 2.5 us per sample; a 256-VM host with two dozen
plugin families spent most of its scrape there. A :class:`VMFamily` is built from whole per-VM
arrays in microseconds, and memtune's text renderer formats its columns directly, with label
prefixes cached per set of VMs::

    from memtune.metrics.families import vm_counter, vm_gauge

    @hookimpl
    def memtune_collect_metrics(host):
        return [vm_gauge("memtune_example_size_bytes", "Size of the example pool.",
                         host.vm_names, sizes),
                vm_counter("memtune_example_filled_bytes", "Bytes put in the example pool.",
                           host.vm_names, inflated)]

A :class:`VMFamily` is a prometheus_client ``Metric``: its ``samples`` are built the first time
something reads them (``generate_latest``, ``HostCollector.collect()``, a test), so any consumer of
prometheus_client families sees an ordinary family. Plugins that return ``GaugeMetricFamily`` /
``CounterMetricFamily`` filled with ``add_metric`` keep working and render to the same text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

_LABEL_OK = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = {"vm", "le", "quantile"}


class VMFamily(Metric):
    """A gauge or counter family with one sample per VM in each of its columns.

    A column is a per-VM array of values (``values[i]`` belongs to ``vm_names[i]``) plus constant
    labels shared by the column's samples, e.g. ``{"dir": "in"}``; a family with one column and no
    extra labels is the usual case (:func:`vm_gauge`, :func:`vm_counter`). Values are copied when
    the column is added, so the caller may keep mutating its arrays. A counter's ``name`` may end in
    ``_total`` (as with ``CounterMetricFamily``, the family name drops it and each sample adds it).
    """

    def __init__(
        self, name: str, documentation: str, typ: str, vm_names: Sequence[str], unit: str = ""
    ) -> None:
        if typ not in ("gauge", "counter"):
            raise ValueError(f"VMFamily type must be 'gauge' or 'counter', not {typ!r}")
        if typ == "counter" and name.endswith("_total"):
            name = name[: -len("_total")]
        super().__init__(name, documentation, typ, unit)  # sets samples = [] through the setter
        self._samples: list[Sample] | None = None
        self.vm_names: tuple[str, ...] = tuple(vm_names)
        self.sample_name = self.name + "_total" if typ == "counter" else self.name
        self.columns: list[tuple[dict[str, str], np.ndarray]] = []

    def add_column(self, values: ArrayLike, labels: dict[str, str] | None = None) -> VMFamily:
        """Add one sample per VM: ``values`` (one number per VM) with the constant ``labels``.

        Returns the family, so columns chain: ``VMFamily(...).add_column(a, {"dir": "in"})``.
        """
        arr = np.array(values, dtype=np.float64)  # a copy, never a view of the caller's state
        if arr.shape != (len(self.vm_names),):
            raise ValueError(
                f"{self.name}: expected one value per VM ({len(self.vm_names)}), got shape {arr.shape}"
            )
        extra = {str(k): str(v) for k, v in (labels or {}).items()}
        for k in extra:
            if not _LABEL_OK.match(k) or k in _RESERVED_LABELS or k.startswith("__"):
                raise ValueError(f"{self.name}: invalid label name {k!r}")
        self.columns.append((extra, arr))
        if self._samples is not None:  # samples already handed out: keep them complete
            self._samples.extend(self._column_samples(extra, arr))
        return self

    @property
    def fast_columns(self) -> list[tuple[dict[str, str], np.ndarray]] | None:
        """The columns, for renderers that format arrays directly; ``None`` once ``samples`` has been
        read (a caller may have changed that list, which then is what the family holds)."""
        return self.columns if self._samples is None else None

    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        """prometheus_client samples, built from the columns on first access."""
        if self._samples is None:
            self._samples = [s for extra, arr in self.columns for s in self._column_samples(extra, arr)]
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value

    def _column_samples(self, extra: dict[str, str], arr: np.ndarray) -> list[Sample]:
        name = self.sample_name
        return [
            Sample(name, {"vm": v, **extra}, x, None, None)
            for v, x in zip(self.vm_names, arr.tolist(), strict=True)
        ]


def vm_gauge(
    name: str, doc: str, vm_names: Sequence[str], values: ArrayLike, labels: dict[str, str] | None = None
) -> VMFamily:
    """A gauge family with one sample per VM (label ``vm``, plus constant ``labels``)."""
    return VMFamily(name, doc, "gauge", vm_names).add_column(values, labels)


def vm_counter(
    name: str, doc: str, vm_names: Sequence[str], values: ArrayLike, labels: dict[str, str] | None = None
) -> VMFamily:
    """A counter family with one ``<name>_total`` sample per VM (``name`` may end in ``_total``)."""
    return VMFamily(name, doc, "counter", vm_names).add_column(values, labels)
