"""Workload profiles measured from real memory (``memtune profile``).

Read page contents from raw memory images or live processes (:mod:`.sources`), count zero,
duplicate and shareable pages and measure compressibility with real compressors (:mod:`.analysis`),
measure a process's working set over an interval (:mod:`.wss`), and write a TOML profile a scenario
workload can reference with ``profile = "file.toml"`` (:mod:`.writer`).
"""

from memtune.profile.analysis import Profiler, page_hashes, zero_mask
from memtune.profile.sources import PAGE, ImageSource, ProcessSource
from memtune.profile.writer import profile_document, workload_table, write_profile
from memtune.profile.wss import measure_wss

__all__ = ["PAGE", "ImageSource", "ProcessSource", "Profiler", "measure_wss", "page_hashes",
           "profile_document", "workload_table", "write_profile", "zero_mask"]
