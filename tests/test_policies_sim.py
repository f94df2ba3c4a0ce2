"""Simulating under a policy: inter-VM page sharing (esxi-legacy-tps) saves more than intra-VM only."""

from __future__ import annotations

import pytest

from memtune.core.scenario import load_scenario
from memtune.core.simulation import simulate
from memtune.policies import apply_policy, load_policy


def _run(preset: str) -> dict:
    sc = apply_policy(load_policy(preset), load_scenario("small"))
    return simulate(sc, duration=300)


@pytest.mark.slow
def test_legacy_tps_shares_more_than_todays_default_on_small():
    default, legacy = _run("esxi-default"), _run("esxi-legacy-tps")
    assert default["settings"]["Mem.ShareForceSalting"] == 2
    assert legacy["settings"]["Mem.ShareForceSalting"] == 0

    def total(result: dict, column: str) -> float:
        return sum(v[column] for v in result["vms"])

    # salting 2 shares zero pages and duplicates inside each VM; salting 0 also merges the template
    # pages that VMs of one image have in common (35-45 % of web and vdi memory in `small`)
    assert total(legacy, "shared_saved") > 1.1 * total(default, "shared_saved")
    assert total(legacy, "shared") > 1.5 * total(default, "shared")
    # per role on the desktops of one image; `web` writes 4000 pages/s, 90 % of them in its hot set,
    # and is ballooned from its cold end, so little of its template memory is left intact and
    # scanned in 5 minutes (about 20 MiB saved across the four web VMs either way)
    saved = {name: sum(v["shared_saved"] for v in r["vms"] if v["name"].startswith("vdi"))
             for name, r in (("default", default), ("legacy", legacy))}
    assert saved["legacy"] > 1.5 * saved["default"]
