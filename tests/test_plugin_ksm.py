"""The ``ksm`` plugin's rules on small hosts (no kernel needed): two visits before a merge, trees,
max_page_sharing, use_zero_pages, smart_scan, COW, rate in real units, ksmtuned, mode choice."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_scenario

from benchmarks import ksm_convergence as kc
from memtune.core.engine import Engine
from memtune.core.pages import FREE, RESIDENT
from memtune.core.plugins import build_plugin_manager
from memtune.core.simulation import build_host
from memtune.errors import ConfigError
from memtune.plugins import ksm

MIX = kc.MIX


def counters_after(knobs: dict, seconds: float, **kw):
    host, engine = kc.build(knobs=knobs, **kw)
    while host.now < seconds - 1e-9:
        engine.step(kc.TICK)
    return host, ksm.counters(host)


def expected(n_vms: int, pages: int, mps: int, zero_pages: bool = False) -> tuple[int, int, int]:
    """(pages_shared, pages_sharing, pages_unshared) once everything merged, from the mix."""
    z, t, dup = (int(MIX[k] * pages) for k in ("zero", "template", "duplicate"))
    u = pages - z - t - dup

    def key(copies: int) -> np.ndarray:      # KSM pages, further mappings, a page left waiting
        full, r = divmod(copies, mps)
        frames = full + (r >= 2)
        left = int(r == 1)
        return np.array([frames, copies - left - frames, left])

    tot = np.array([0, 0, n_vms * u])
    if not zero_pages:
        tot += key(n_vms * z)
    tot += t * key(n_vms)
    groups, last = divmod(dup, 4)
    tot += n_vms * groups * key(4) + n_vms * key(last)
    return tuple(int(x) for x in tot)


def test_nothing_merges_in_the_first_full_scan_then_everything_in_the_second():
    knobs = {"pages_to_scan": 100, "sleep_millisecs": 20}
    host, engine = kc.build(knobs=knobs)
    d = host.plugin_data["ksm"]
    while d.full_scans == 0:
        engine.step(kc.TICK)
        if d.full_scans == 0:
            assert ksm.counters(host)["pages_sharing"] == 0
    while d.full_scans < 2:
        engine.step(kc.TICK)
    c = ksm.counters(host)
    assert (c["pages_shared"], c["pages_sharing"], c["pages_unshared"]) == expected(4, 4096, 256)
    assert c["pages_volatile"] == 0
    rmap = 4 * 4096
    assert c["general_profit"] == c["pages_sharing"] * 4096 - rmap * 64


def test_rate_in_real_units_scans_a_16_mib_vm_at_the_kernel_speed():
    """Defaults: 100 pages per 20 ms sleep (24 ms in jiffies at HZ=250) + 15 us of checksum a page
    (a first scan has no tree work); later scans, which search the trees, are slower."""
    host, engine = kc.build(n_vms=1, knobs={})
    d = host.plugin_data["ksm"]
    assert d.rate(host) == pytest.approx(100 / 0.0255)
    while d.full_scans == 0:
        engine.step(kc.TICK)
    assert host.now == pytest.approx(4096 * 0.0255 / 100, abs=kc.TICK)
    first = host.now
    while d.full_scans == 1:
        engine.step(kc.TICK)
    assert d.tree_share > 0.7          # pages with an unchanged checksum (KSM pages visited cost a checksum)
    # merging scans: + 55 us a page of tree work, up to 31 ms a batch
    assert 1.1 * first < host.now - first <= 4096 * 0.031 / 100 + kc.TICK


@pytest.mark.slow
@pytest.mark.parametrize("mps", [2, 3, 256])
def test_max_page_sharing_limits_mappings_per_ksm_page(mps):
    _, c = counters_after(
        {"pages_to_scan": 1000, "sleep_millisecs": 10, "max_page_sharing": mps, "smart_scan": 0}, 12.0
    )
    assert (c["pages_shared"], c["pages_sharing"], c["pages_unshared"]) == expected(4, 4096, mps)


@pytest.mark.slow
def test_use_zero_pages_maps_zero_pages_without_ksm_pages():
    host, c = counters_after(
        {"pages_to_scan": 1000, "sleep_millisecs": 10, "use_zero_pages": 1, "smart_scan": 0}, 12.0
    )
    assert c["ksm_zero_pages"] == 4 * int(0.1 * 4096)
    assert (c["pages_shared"], c["pages_sharing"], c["pages_unshared"]) == expected(
        4, 4096, 256, zero_pages=True
    )
    assert c["general_profit"] == (c["pages_sharing"] + c["ksm_zero_pages"]) * 4096 - 64 * (
        4 * 4096 - c["ksm_zero_pages"]
    )


@pytest.mark.slow
def test_smart_scan_skips_pages_that_never_merge():
    on = counters_after({"pages_to_scan": 2000, "sleep_millisecs": 10}, 30.0)[1]
    off = counters_after({"pages_to_scan": 2000, "sleep_millisecs": 10, "smart_scan": 0}, 30.0)[1]
    assert off["pages_skipped"] == 0 and on["pages_skipped"] > 0
    assert on["full_scans"] > off["full_scans"]  # skipped pages cost no budget
    for k in ("pages_shared", "pages_sharing"):
        assert on[k] == off[k]


def test_write_breaks_the_merge_and_frees_the_ksm_page():
    host, engine = kc.build(n_vms=2, knobs={"pages_to_scan": 1000, "sleep_millisecs": 10})
    while host.plugin_data["ksm"].full_scans < 2:
        engine.step(kc.TICK)
    d = host.plugin_data["ksm"]
    pg = host.pages
    merged = np.flatnonzero(pg.state == d.code)
    tmpl = merged[(pg.content[merged] >> 45) == 1]
    key = pg.content[tmpl[0]]
    pair = tmpl[pg.content[tmpl] == key]
    assert pair.size == 2
    before = ksm.counters(host)
    lat = host.serve_fault(d.code, pages=pair[:1], write=np.ones(1, bool))
    assert lat[0] > 0 and pg.state[pair[0]] == RESIDENT
    after = ksm.counters(host)
    assert after["pages_sharing"] == before["pages_sharing"] - 1
    assert after["pages_shared"] == before["pages_shared"]  # the other mapping keeps it
    host.serve_fault(d.code, pages=pair[1:], write=np.ones(1, bool))
    assert ksm.counters(host)["pages_shared"] == before["pages_shared"] - 1
    engine.step(kc.TICK)  # the next visits see new content
    assert host.free_bytes() > 0


def _scenario(settings: dict, memory: str = "1 GiB"):
    wl = {"allocated": 1.0, "wss": 1.0, "touch_rate": 0.0, "content": {"template": 1.0}}
    return build_scenario(
        [{"name": f"v{i}", "memory": "64 MiB", "workload": "w"} for i in range(2)],
        name="t",
        memory=memory,
        duration="10m",
        tick="5s",
        seed=1,
        page_scale=1,
        settings=settings,
        workload=wl,
        tiny_workload=False,
        vm_defaults={},
        report_interval=None,
        source="<t>",
    )


def test_ksmtuned_stops_ksm_on_a_lightly_committed_host_and_boosts_under_pressure():
    pm = build_plugin_manager(disable=["balloon", "compression", "swap", "audit"], entrypoints=False)
    light = Engine(build_host(_scenario({"memtune.sharing": "ksm", "ksmtuned.enabled": True}), pm=pm)).host
    from memtune.plugins import ksmtuned

    ksmtuned.adjust(light, light.plugin_data["ksm"])
    assert light.plugin_data["ksm"].run == 0
    tight = Engine(
        build_host(_scenario({"memtune.sharing": "ksm", "ksmtuned.enabled": True}, memory="200 MiB"), pm=pm)
    ).host
    tight.pages.set_state(np.flatnonzero(tight.pages.state == FREE), RESIDENT)
    d = tight.plugin_data["ksm"]
    ksmtuned.adjust(tight, d)
    assert (d.run, d.pages_to_scan) == (1, 300)
    ksmtuned.adjust(tight, d)
    assert d.pages_to_scan == 600
    # sleep scaled from 10 ms for 16 GiB: smaller hosts sleep longer
    assert d.sleep_ms == int(10 * 16 * 1024 * 1024 // (200 * 1024))


def test_tps_is_the_default_and_ksm_stays_idle():
    pm = build_plugin_manager(disable=["balloon", "compression", "swap", "audit"], entrypoints=False)
    host = Engine(build_host(_scenario({}), pm=pm)).host
    assert "tps" in host.plugin_data and "ksm" not in host.plugin_data
    host = Engine(build_host(_scenario({"memtune.sharing": "ksm"}), pm=pm)).host
    assert "ksm" in host.plugin_data and "tps" not in host.plugin_data


def test_bad_ksm_setting_names_the_field():
    pm = build_plugin_manager(entrypoints=False)
    with pytest.raises(ConfigError, match="ksm.use_zero_pages"):
        build_host(_scenario({"memtune.sharing": "ksm", "ksm.use_zero_pages": 3}), pm=pm)
    with pytest.raises(ConfigError, match="memtune.sharing"):
        build_host(_scenario({"memtune.sharing": "uksm"}), pm=pm)


def test_the_tuner_sees_ksm_knobs_in_ksm_mode_and_tps_knobs_otherwise():
    from memtune.tuner.space import collect_knobs

    pm = build_plugin_manager(entrypoints=False)
    ksm_names = {k.name for k in collect_knobs(pm, _scenario({"memtune.sharing": "ksm"}))}
    tps_names = {k.name for k in collect_knobs(pm, _scenario({}))}
    assert {"ksm.pages_to_scan", "ksm.sleep_millisecs", "ksm.max_page_sharing"} <= ksm_names
    assert "Mem.ShareScanTime" not in ksm_names
    assert "Mem.ShareScanTime" in tps_names and not any(n.startswith("ksm.") for n in tps_names)


def test_a_page_written_between_visits_stays_volatile():
    """Each write is new content (``contents.rewritten``): a page written between two of ksmd's
    visits never waits in the unstable tree, as the kernel's checksum sees it change. With one id
    per page for every write, the model held 100 k pages unshared where the kernel had 6-10 k
    (scaled ``small``, 16 VMs, 30 s)."""
    from memtune.core.contents import is_unique, rewritten, template_content, unique_content

    p = np.arange(6)
    c = np.concatenate([unique_content(p[:3]), template_content(1, p[3:])])
    once, twice = rewritten(c, p), rewritten(rewritten(c, p), p)
    assert is_unique(once).all() and (once != c).all() and (twice != once).all()
    assert np.unique(np.concatenate([once, twice, unique_content(p + 1)])).size == 18

    host, engine = kc.build(n_vms=2, knobs={"pages_to_scan": 1000, "sleep_millisecs": 10})
    d = host.plugin_data["ksm"]
    pg = host.pages
    pages = np.flatnonzero((pg.state == RESIDENT) & is_unique(pg.content))[:200]
    while d.full_scans < 4:
        pg.content[pages] = rewritten(pg.content[pages], pages)
        engine.step(kc.TICK)
        assert not d.unstable[pages].any()
    assert (d.checksum[pages] >= 0).all()


def _lru_host(victims: str):
    from memtune.core.scenario import scenario_from_dict

    settings = {"memtune.sharing": "ksm", "ksm.pages_to_scan": 1000, "ksm.sleep_millisecs": 10,
                "memtune.compression": "zram", "memtune.host_victims": victims, "Mem.MemZipMaxPct": 50}
    wl = {"allocated": 1.0, "wss": 0.2, "touch_rate": 0.0, "write_fraction": 0.0, "content": MIX,
          "duplicate_copies": 4}
    sc = scenario_from_dict({"name": "lru", "duration": "60s", "tick": f"{kc.TICK}s", "seed": 1,
                             "host": {"memory": "2 GiB", "page_scale": 1}, "settings": settings,
                             "workloads": {"w": wl},
                             "vm": [{"name": f"vm{i}", "memory": "4 MiB", "workload": "w", "image": "linux"}
                                    for i in range(2)]}, "<lru>")
    host = build_host(sc, pm=build_plugin_manager(disable=["balloon", "swap", "audit"], entrypoints=False))
    host.pages.set_state(np.flatnonzero(host.pages.state == FREE), RESIDENT)
    engine = Engine(host)
    while host.plugin_data["ksm"].full_scans < 2:
        engine.step(kc.TICK)
    return host, engine


def test_a_linux_host_reclaims_ksm_pages_and_ksmd_merges_them_again():
    """ksm.rst: merged pages "can be swapped out just like other user pages (but sharing is broken
    when they are swapped back in: ksmd must rediscover their identity and merge again)". With LRU
    victims (``memtune.host_victims = "cold"``) merged pages are victims; ESX's random victims
    take resident pages only."""
    from memtune.plugins import compression

    for victims, takes_merged in (("random", False), ("cold", True)):
        host, engine = _lru_host(victims)
        d, pg = host.plugin_data["ksm"], host.pages
        full = ksm.counters(host)
        before = full["pages_sharing"]
        assert before > 0
        allowed = host.states.table(RESIDENT)
        picked = host.pick_victims(host.rng("t"), pg.npages.copy(), allowed)
        merged = picked[pg.state[picked] == d.code]
        assert (merged.size > 0) == takes_merged
        if not takes_merged:
            continue
        z = host.plugin_data["compression"].code
        compression.take_pages(host, merged)
        assert (pg.state[merged] == z).all()
        engine.step(kc.TICK)
        assert ksm.counters(host)["pages_sharing"] < before           # the trees follow
        host.serve_fault(z, merged, np.zeros(merged.size, bool))       # swapped back in: private
        assert (pg.state[merged] == RESIDENT).all()
        scans = d.full_scans
        while d.full_scans < scans + 3:      # a first visit (checksum), a second (merge)
            engine.step(kc.TICK)
        after = ksm.counters(host)
        assert after["pages_sharing"] == before            # and merged again
