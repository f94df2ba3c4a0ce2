"""Prometheus metrics for memtune: host collector, textfile output, HTTP server, tuner metrics.

See docs/metrics.md for every family, its units and what it matches in esxtop, vSphere,
node_exporter (``node_ksmd_*``) and the libvirt exporter (``libvirt_domain_memory_stats_*``).
"""

from memtune.metrics.collector import HostCollector, RunHandle, host_registry, snapshot_families
from memtune.metrics.model import LATENCY_BUCKET_MODES, Snapshot, take_snapshot
from memtune.metrics.server import SimulationThread, start_metrics_server, stop_metrics_server
from memtune.metrics.textfile import write_textfile
from memtune.metrics.tuner import TunerMetrics

__all__ = [
    "LATENCY_BUCKET_MODES",
    "HostCollector",
    "RunHandle",
    "SimulationThread",
    "Snapshot",
    "TunerMetrics",
    "host_registry",
    "snapshot_families",
    "start_metrics_server",
    "stop_metrics_server",
    "take_snapshot",
    "write_textfile",
]
