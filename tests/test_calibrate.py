"""memtune calibrate: measured costs become [settings] with registered names only, and a scenario
using them loads and resolves."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

from memtune.calibrate import calibrate, known_settings, render
from memtune.cli import main_group
from memtune.core.scenario import load_scenario
from memtune.core.simulation import build_host
from memtune.units import parse_duration


@pytest.fixture(scope="module")
def cal_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("cal")
    out = d / "latency.toml"
    res = CliRunner().invoke(main_group, ["calibrate", "--out", str(out), "--device", str(d), "--reads", "50",
                                          "--repeats", "2"])
    assert res.exit_code == 0, res.output
    return out, res.output


@pytest.mark.slow
def test_settings_are_registered_names_with_sane_values(cal_file):
    out, output = cal_file
    data = tomllib.loads(out.read_text())
    assert set(data) == {"settings"}
    s = {k: parse_duration(v) for k, v in data["settings"].items()}
    assert set(s) <= known_settings()
    assert {"latency.page_alloc", "latency.cow_break", "latency.decompress", "latency.swap_in_ssd"} <= set(s)
    # a native minor fault costs between 50 ns and 1 ms on any machine this runs on
    assert 5e-8 < s["latency.page_alloc"] < 1e-3
    # decompression faults first and then decompresses: more than the fault alone
    assert s["latency.decompress"] > s["latency.page_alloc"]
    # a swap-in is a device read plus the fault
    assert s["latency.swap_in_ssd"] > s["latency.page_alloc"]
    text = out.read_text()
    assert "# measured lz4_decompress:" in text and "# measured device_read_p99:" in text
    assert "random 4 KiB reads" in text


def test_a_scenario_uses_the_calibrated_settings(cal_file, tmp_path):
    out, _ = cal_file
    settings = tomllib.loads(out.read_text())["settings"]
    body = "\n".join(f'"{k}" = "{v}"' for k, v in settings.items())
    (tmp_path / "s.toml").write_text(f"""
name = "cal"
duration = "1m"
[host]
memory = "4 GiB"
page_scale = 64
[settings]
{body}
[[vm]]
name = "vm"
memory = "1 GiB"
""")
    host = build_host(load_scenario(str(tmp_path / "s.toml")))
    for k, v in settings.items():
        assert host.settings[k] == pytest.approx(parse_duration(v))


@pytest.mark.slow
def test_names_no_plugin_registers_are_not_written():
    cal = calibrate(None, known={"latency.page_alloc"}, repeats=1)
    assert set(cal.settings) == {"latency.page_alloc"}
    assert set(cal.skipped) == {"latency.cow_break", "latency.decompress"}
    text = render(cal)
    assert '"latency.cow_break"' not in text.split("[settings]")[1]
    assert "# not written: latency.cow_break (no loaded plugin registers this setting)" in text
    assert "no --device: swap-in latencies not measured" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["calibrate", "--device", "/nonexistent/dev"], "--device: no such file or directory"),
        (
            ["calibrate", "--device", "/dev/null", "--repeats", "1"],
            "--device: /dev/null is too small to read from",
        ),
    ],
)
def test_bad_device_is_one_line(args, message):
    res = CliRunner().invoke(main_group, args)
    assert res.exit_code == 2 and res.output.count("\n") == 1 and message in res.output, res.output
