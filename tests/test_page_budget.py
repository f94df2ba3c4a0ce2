"""A scenario whose per-page state cannot fit this machine is refused before it allocates: one line
naming host.page_scale and a scale that fits, exit 2. Before, such a run allocated until the OOM
killer ended it (Linux overcommits), or died in a plugin's MemoryError after minutes."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.core.page_budget import BYTES_PER_PAGE, available_bytes, check_fits
from memtune.errors import ConfigError

# 16 VMs of 16 TiB at page_scale 1: 2^36 simulated pages, ~4 TiB of page state on any machine
HUGE = """
name = "huge"
duration = "20s"
tick = "2s"
warmup = "4s"
[host]
memory = "256 TiB"
page_scale = 1
[workloads.w]
kind = "constant"
allocated = 0.6
wss = 0.3
touch_rate = 5000
[[vm]]
name = "web"
count = 16
memory = "16 TiB"
workload = "w"
"""


def test_a_scenario_too_large_for_this_machine_is_one_line_naming_page_scale(tmp_path):
    path = tmp_path / "huge.toml"
    path.write_text(HUGE)
    t0 = time.monotonic()
    res = CliRunner().invoke(main_group, ["simulate", str(path)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"memtune: error: {path}: host.page_scale: 68,719,476,736 simulated pages")
    assert "set page_scale = " in lines[0]
    assert time.monotonic() - t0 < 30  # refused before anything per page is allocated


@pytest.mark.parametrize("available", [10**6, 10**9, 32 * 2**30])
def test_the_suggested_scale_fits_in_half_of_what_is_available(available):
    pages, scale = 1 << 30, 4
    with pytest.raises(ConfigError) as exc:
        check_fits(pages, scale, "sc.toml", available=available)
    suggested = int(str(exc.value).split("page_scale = ")[1].split()[0])
    assert suggested > scale and suggested & (suggested - 1) == 0
    assert pages * scale // suggested * BYTES_PER_PAGE <= available // 2
    # and the next smaller power of two would not
    assert pages * scale // (suggested // 2) * BYTES_PER_PAGE > available // 2


def test_a_scenario_that_fits_passes_and_available_memory_is_read():
    assert available_bytes() > 0
    check_fits(1 << 20, 1, "sc.toml", available=(1 << 20) * BYTES_PER_PAGE)
