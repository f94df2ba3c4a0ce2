"""Content shared by some VMs: [[content_group]] parsing, page contents, sharing that grows with the
number of VMs, and `memtune profile --scenario-out` writing a measured sharing-degree distribution."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import build_scenario

from memtune.core.contents import GROUP_IMAGE_BASE
from memtune.core.engine import Engine
from memtune.core.plugins import build_plugin_manager
from memtune.core.scenario import load_scenario
from memtune.core.simulation import build_host
from memtune.errors import ConfigError

PAGE = 4096


def _scenario(groups: list, n_vms: int = 4, seed: int = 1, **extra):
    return build_scenario([{"name": "vm", "count": n_vms, "memory": "16 MiB", "workload": "w"}], name="g",
                          memory="4 GiB", duration="1m", tick="5s", seed=seed, page_scale=1,
                          workload={"allocated": 1.0, "wss": 1.0, "content": {"zero": 0.1, "unique": 0.9}},
                          tiny_workload=False, vm_defaults={}, report_interval=None, source="<groups>",
                          content_group=groups, **extra)


def _host(sc):
    return Engine(build_host(sc, pm=build_plugin_manager(entrypoints=False))).host


def _group_of(content: np.ndarray) -> np.ndarray:
    return ((content >> 32) & 0x1FFF) - GROUP_IMAGE_BASE


def test_members_hold_the_same_group_pages_and_others_none():
    sc = _scenario([{"name": "os", "share": 0.5}, {"name": "app", "share": 0.25, "members": 0.5}], n_vms=8)
    h = _host(sc)
    pg = h.pages
    n = 4096
    app_members = 0
    for v in range(h.nvm):
        c = pg.content[pg.base[v]: pg.base[v] + n]
        tmpl = (c >> 45) == 1
        g = _group_of(c[tmpl])
        assert np.count_nonzero(g == 0) == n // 2                     # everyone runs the OS group
        k = np.count_nonzero(g == 1)
        assert k in (0, n // 4)
        app_members += k > 0
        rest = n - np.count_nonzero(tmpl)
        assert np.count_nonzero(c == 0) == int(0.1 * rest)            # the mix applies to the rest
    assert 0 < app_members < 8
    # same pages in every member: distinct group contents = one VM's worth
    allc = pg.content[(pg.content >> 45) == 1]
    assert np.unique(allc).size == n // 2 + n // 4


def test_membership_is_seeded_and_patterns_select_vms():
    a = _host(_scenario([{"name": "app", "share": 0.3, "members": 0.5}], n_vms=10, seed=3)).pages.content
    b = _host(_scenario([{"name": "app", "share": 0.3, "members": 0.5}], n_vms=10, seed=3)).pages.content
    assert np.array_equal(a, b)
    h = _host(_scenario([{"name": "web", "share": 0.3, "vms": ["vm-0[12]"]}], n_vms=4))
    held = [
        bool(((h.pages.content[h.pages.base[v] : h.pages.base[v] + 4096] >> 45) == 1).any()) for v in range(4)
    ]
    assert held == [True, True, False, False]


@pytest.mark.parametrize(
    "bad, field",
    [
        ([{"name": "x"}], "content_group[0].share"),
        ([{"name": "x", "share": 1.5}], "content_group[0].share"),
        ([{"name": "x", "share": 0.2, "members": 0}], "content_group[0].members"),
        ([{"name": "x", "share": 0.2, "color": 1}], "content_group[0].color"),
        ([{"name": "x", "share": 0.2}, {"name": "x", "share": 0.1}], "content_group[1].name"),
        ([{"name": "x", "share": 0.2, "vms": []}], "content_group[0].vms"),
    ],
)
def test_bad_groups_name_the_field(bad, field):
    with pytest.raises(ConfigError) as e:
        _scenario(bad)
    assert field in str(e.value)


def test_groups_over_a_vms_memory_are_refused():
    with pytest.raises(ConfigError, match="add up to 1.2"):
        _host(_scenario([{"name": "a", "share": 0.6}, {"name": "b", "share": 0.6}]))


@pytest.mark.slow
def test_sharing_grows_with_the_number_of_vms():
    """Mean reclaimed share over seeds rises from 2 to 10 VMs (members of partial groups accumulate)."""
    from benchmarks.sharing_curve import run_groups

    saved = {n: np.mean([run_groups(n, seed=s)["saved"] for s in (1, 2, 3)]) for n in (2, 4, 10)}
    assert saved[2] < saved[4] < saved[10]
    assert saved[10] - saved[2] > 0.1


def _write_images(tmp_path) -> list:
    """Four images of 64 pages: 16 pages common to all, 8 shared by pairs (0-1, 2-3), 8 zero, rest unique."""
    rng = np.random.default_rng(5)
    common = rng.integers(0, 256, (16, PAGE), dtype=np.uint8)
    pair = [rng.integers(0, 256, (8, PAGE), dtype=np.uint8) for _ in range(2)]
    paths = []
    for i in range(4):
        pages = np.concatenate(
            [
                common,
                pair[i // 2],
                np.zeros((8, PAGE), np.uint8),
                rng.integers(0, 256, (32, PAGE), dtype=np.uint8),
            ]
        )
        p = tmp_path / f"img{i}.bin"
        p.write_bytes(pages.tobytes())
        paths.append(p)
    return paths


@pytest.mark.slow
def test_profile_writes_the_sharing_degree_as_content_groups(tmp_path):
    paths = _write_images(tmp_path)
    out = tmp_path / "fleet.toml"
    args = [
        sys.executable,
        "-m",
        "memtune",
        "profile",
        *[a for p in paths for a in ("--image", str(p))],
        "--scenario-out",
        str(out),
        "--vms",
        "8",
    ]
    subprocess.run(args, check=True, capture_output=True)
    sc = load_scenario(str(out))
    groups = {g.name: g for g in sc.content_groups}
    # degree 4: 16 of 64 pages in each image -> members 1, share 0.25; degree 2: 8/64 -> share 0.25, members
    # 0.5
    assert groups["held-by-4-of-4"].members == 1.0 and groups["held-by-4-of-4"].share == pytest.approx(0.25)
    assert groups["held-by-2-of-4"].members == 0.5 and groups["held-by-2-of-4"].share == pytest.approx(0.25)
    assert len(sc.vms) == 8 and sc.vms[0].memory == max(64 * PAGE, 1 << 20)  # at least 1 MiB
    wl = sc.vms[0].workload
    assert wl.content[1] == 0.0  # no template: shared content is in groups
    rest = 1 - 0.25 - 0.5 * 0.25
    assert wl.content[0] == pytest.approx((8 / 64) / rest, abs=1e-5)
