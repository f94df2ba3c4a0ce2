"""Shared set-up of the tuner tests: a tiny two-role scenario file and a recording executor."""

from __future__ import annotations

from pathlib import Path

from memtune.tuner.executors import SerialExecutor

# 3 GiB host, web-01/02 and db-01/02 of 1 GiB each: overcommitted once guests touch their memory;
# two minutes simulated with 64 KiB simulated pages keep one run well under a second.
TINY_TOML = """
name = "tiny-tuner"
duration = "2m"
tick = "2s"
warmup = "30s"
seed = 7

[host]
memory = "3 GiB"
page_scale = 16

[workloads.web]
kind = "constant"
allocated = 0.8
wss = 0.3
hot_share = 0.9
touch_rate = 20000
write_fraction = 0.2

[workloads.db]
kind = "constant"
allocated = 0.9
wss = 0.5
touch_rate = 40000
write_fraction = 0.3

[[vm]]
name = "web"
count = 2
memory = "1 GiB"
workload = "web"
image = "linux"

[[vm]]
name = "db"
count = 2
memory = "1 GiB"
workload = "db"
image = "linux"
shares = "high"
"""


def tiny_file(folder: Path) -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


class RecordingExecutor(SerialExecutor):
    """Runs in this process and remembers which evaluation indices were simulated."""

    def __init__(self) -> None:
        super().__init__()
        self.simulated: list[int | str] = []

    def submit(self, task):
        self.simulated.append(task.index)
        super().submit(task)
