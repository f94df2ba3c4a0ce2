"""PromQL pieces every memtune dashboard shares: the host filter, the rate window, rates per
simulated second, and the host / VM variables.

Every query selects per-host series or aggregates ``by (instance, ...)`` so that one Prometheus
scraping several ``memtune serve`` never shows their sum (docs/metrics.md, The dashboards).
"""

from __future__ import annotations

from memtune.monitoring.grafana import INSTANCE, query_variable

I = INSTANCE                       # noqa: E741 - the host filter every query carries
RATE = "$__rate_interval"
HOSTS = query_variable("instance", "Host", "label_values(memtune_host_memory_bytes, instance)")
# the drill-down's VMs: All is the 10 VMs that stall most on the selected hosts (not all 256 of `large`)
TOP_VMS = query_variable(
    "vm",
    "VM (top 10 by stall)",
    f"query_result(topk(10, memtune:vm_stall:ratio_rate1m{{{I}}}))",
    regex='/vm="([^"]+)"/',
)


def per_sim_second(metric: str, by: str = "instance", select: str = I) -> str:
    """Rate of ``metric`` per simulated second, per host (``by`` keeps more labels, e.g. ``instance, vm``)."""
    return (
        f"sum by ({by}) (rate({metric}{{{select}}}[{RATE}])) / on (instance) group_left "
        f"sum by (instance) (rate(memtune_host_simulated_seconds_total{{{I}}}[{RATE}]))"
    )
