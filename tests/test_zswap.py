"""zswap parameters through the live run's undo log, with a fake sysfs (no root needed)."""

from __future__ import annotations

import pytest

from memtune.live import zswap
from memtune.live.state import HostError, HostState

FOUND = {"enabled": "N", "compressor": "lzo", "max_pool_percent": "20",
         "accept_threshold_percent": "90", "shrinker_enabled": "N"}


@pytest.fixture
def params(tmp_path, monkeypatch):
    d = tmp_path / "parameters"
    d.mkdir()
    for k, v in FOUND.items():
        (d / k).write_text(v + "\n")
    monkeypatch.setattr(zswap, "PARAMS", d)
    return d


def test_configure_saves_each_value_and_restore_puts_it_back(params, tmp_path):
    st = HostState(tmp_path / "state.json")
    zswap.configure(st, enabled=True, compressor="deflate", max_pool_percent=1, shrinker_enabled=False)
    assert zswap.params() == {**FOUND, "enabled": "Y", "compressor": "deflate", "max_pool_percent": "1"}
    written = [e["path"].rsplit("/", 1)[1] for e in st.entries]
    assert written == ["compressor", "max_pool_percent", "enabled"]   # unchanged ones untouched; enabled last
    assert [e["old"] for e in st.entries] == ["lzo", "20", "N"]
    assert st.restore() == []
    assert zswap.params() == FOUND


def test_unknown_parameter_is_one_clear_error(params, tmp_path):
    with pytest.raises(HostError, match="unknown zswap parameter 'zpool'"):
        zswap.configure(HostState(tmp_path / "state.json"), zpool="zbud")


def test_refused_compressor_names_what_is_offered(params, tmp_path, monkeypatch):
    def refuse(path, value):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr("memtune.live.state.sysfs_write", refuse)
    monkeypatch.setattr(zswap, "compressors", lambda: ["deflate", "lzo"])
    expected = r"compressor=zstd refused: Invalid argument \(offered: deflate, lzo\)"
    with pytest.raises(HostError, match=expected):
        zswap.configure(HostState(tmp_path / "state.json"), compressor="zstd")


def test_compressors_from_proc_crypto(tmp_path):
    crypto = tmp_path / "crypto"
    crypto.write_text("name : sha256\ntype : shash\n\nname : lzo\ntype : scomp\n\nname : lzo\n"
                      "type : acomp\n\nname : deflate\ntype : compression\n")
    assert zswap.compressors(crypto) == ["deflate", "lzo"]


def test_pool_percent_is_whole_percents_of_total_ram(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:  100 kB\n")      # 24 GiB
    assert zswap.pool_percent(64 * 2**20, meminfo) == 1                      # 0.26 % -> at least 1
    assert zswap.pool_percent(int(2.5 * 2**30), meminfo) == 11


def test_stats_has_the_pool_and_counters():
    if zswap.available():
        pytest.skip(zswap.available())
    got = zswap.stats()
    assert {"pool_bytes", "stored_bytes", "zswpin", "zswpout"} <= set(got)
    assert all(isinstance(v, int) and v >= 0 for v in got.values())
