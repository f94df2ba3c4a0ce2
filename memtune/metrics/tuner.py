"""Metrics of a tuning run (``memtune optimize --metrics-port``): evaluations, objectives, infeasible.

Usage::

    registry = CollectorRegistry()
    tm = TunerMetrics(registry)
    server, thread = start_metrics_server(registry, port=19110, bind="127.0.0.1")
    tm.observe(objective)          # after each simulated evaluation (lower is better)
    tm.infeasible()                # a point rejected by admission control before simulation

The objective is whatever the tuner minimises (unitless here: the tuner documents its unit).
"""

from __future__ import annotations

import math
import threading

from prometheus_client import Counter, Gauge, ProcessCollector
from prometheus_client.registry import CollectorRegistry

from memtune.metrics.model import build_info_family


class _BuildInfo:
    def collect(self):
        yield build_info_family()


class TunerMetrics:
    """Counters and gauges of one tuning run, registered on ``registry``.

    ``memtune_tuner_evaluations_total`` counts simulated evaluations, ``memtune_tuner_infeasible_total``
    points rejected before simulation, ``memtune_tuner_current_objective`` is the last evaluation's
    objective and ``memtune_tuner_best_objective`` the lowest so far (NaN until the first). With
    ``build_info`` (default) ``memtune_build_info`` is registered too; pass False when the registry
    also carries a host collector, which exports it already. With ``process`` (default) the process's
    own ``process_*`` metrics are registered too, as exporters do.
    """

    def __init__(self, registry: CollectorRegistry, *, build_info: bool = True, process: bool = True) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self.best = math.nan
        self.evaluations = Counter("memtune_tuner_evaluations", "Policies evaluated by simulation.",
                                   registry=registry)
        self.infeasible_points = Counter("memtune_tuner_infeasible",
                                         "Points rejected before simulation (admission control, invalid "
                                         "policy).", registry=registry)
        self.current = Gauge("memtune_tuner_current_objective", "Objective of the last evaluation "
                             "(lower is better).", registry=registry)
        self.best_gauge = Gauge("memtune_tuner_best_objective", "Lowest objective found so far.",
                                registry=registry)
        self.current.set(math.nan)
        self.best_gauge.set(math.nan)
        if build_info:
            registry.register(_BuildInfo())
        if process:
            ProcessCollector(registry=registry)

    def observe(self, objective: float) -> None:
        """One evaluation finished with ``objective``."""
        value = float(objective)
        with self._lock:
            self.evaluations.inc()
            self.current.set(value)
            if math.isnan(self.best) or value < self.best:
                self.best = value
                self.best_gauge.set(value)

    def infeasible(self, count: int = 1) -> None:
        """``count`` points were rejected without a simulation."""
        self.infeasible_points.inc(count)
