"""The tuner progress dashboard (``memtune-tuner``): evaluations, objective, infeasible share of
``memtune optimize`` runs, from the ``memtune_tuner_*`` families the tuner exports (docs/metrics.md)."""

from __future__ import annotations

from memtune.monitoring.grafana import dashboard, query_variable, stat, targets, timeseries
from memtune.monitoring.queries import RATE

RUN = 'instance=~"$instance"'      # the selected tuner runs (each serves its own instance)
RUNS = query_variable("instance", "Tuner", "label_values(memtune_tuner_evaluations_total, instance)")


def tuner() -> dict:
    """The dashboard: evaluations, best objective and infeasible share now, then over time."""
    return dashboard(
        "memtune-tuner",
        "memtune / Tuner progress",
        "Progress of memtune optimize runs: evaluations, objective, infeasible share.",
        [RUNS],
        [*progress_stats(RUN), *progress_over_time(RUN)],
    )


def progress_stats(t: str) -> list[dict]:
    """Evaluations and infeasible points so far, the best objective, the share infeasible."""
    return [
        stat(
            "Evaluations",
            "Policies simulated and points rejected before simulation.",
            (0, 0, 8, 5),
            targets(
                (f"memtune_tuner_evaluations_total{{{t}}}", "{{instance}} simulated"),
                (f"memtune_tuner_infeasible_total{{{t}}}", "{{instance}} infeasible"),
                instant=True,
            ),
        ),
        stat(
            "Best objective",
            "Lowest objective so far (lower is better).",
            (8, 0, 8, 5),
            targets((f"memtune_tuner_best_objective{{{t}}}", "{{instance}}"), instant=True),
        ),
        stat(
            "Share of points infeasible",
            "Infeasible points / all points asked.",
            (16, 0, 8, 5),
            targets(
                (
                    f"memtune_tuner_infeasible_total{{{t}}} / (memtune_tuner_infeasible_total{{{t}}} + "
                    f"memtune_tuner_evaluations_total{{{t}}})",
                    "{{instance}}",
                ),
                instant=True,
            ),
            unit="percentunit",
        ),
    ]


def progress_over_time(t: str) -> list[dict]:
    """The objective (latest and best) and evaluations per minute over time."""
    return [
        timeseries(
            "Objective: current vs best",
            "Objective of the latest evaluation and the best so far.",
            (0, 5, 24, 8),
            targets(
                (f"memtune_tuner_current_objective{{{t}}}", "{{instance}} current"),
                (f"memtune_tuner_best_objective{{{t}}}", "{{instance}} best"),
            ),
        ),
        timeseries(
            "Evaluations per minute",
            "Throughput of the tuning run.",
            (0, 13, 24, 8),
            targets(
                (f"rate(memtune_tuner_evaluations_total{{{t}}}[{RATE}]) * 60", "{{instance}} simulated"),
                (f"rate(memtune_tuner_infeasible_total{{{t}}}[{RATE}]) * 60", "{{instance}} infeasible"),
            ),
        ),
    ]
