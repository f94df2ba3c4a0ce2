"""Real Linux KSM on this machine against the ``ksm`` plugin, on the same pages and knobs.

Four child processes get the pages of memtune's four 16 MiB VMs (``benchmarks/ksm_convergence.py``:
same content ids, same order) as ``MADV_MERGEABLE`` memory; ksmd runs with the test's knobs while
the sysfs counters are sampled every 50 ms. The run holds the host lock (/run/memtune-live.lock),
saves and restores every KSM knob (also on SIGINT/SIGTERM) and unmerges before the children exit.
It skips where KSM is missing, not writable, or in use by someone else.

Tolerances:
- final counters (pages_shared, pages_sharing, pages_unshared, ksm_zero_pages) are exact: the same
  content merges the same way;
- the first merge, half and all of pages_sharing, in pages scanned: within two batches (the model
  merges a tick's batch at once, the kernel is sampled every 50 ms: each <= rate x 0.05 s) plus 1 %
  of the pages;
- the same milestones in seconds, with the model's per-page costs set from the kernel's scan rates
  (first scan: checksums only; later: tree searches): within 10 % + 0.1 s. ksmd shares 2 busy cores
  at nice 5, so its rate drifts within a run.
"""

from __future__ import annotations

import pytest

from benchmarks import ksm_convergence as kc
from benchmarks.ksm_kernel import run_kernel, unavailable

PAGES = 4 * 4096


@pytest.fixture(scope="module")
def live() -> None:
    why = unavailable()
    if why:
        pytest.skip(why)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(kc.CONFIGS))
def test_convergence_matches_kernel(live, name):
    knobs = kc.CONFIGS[name]
    host, _ = kc.build(knobs=knobs)
    expect = kc.milestones(kc.run_model(knobs, seconds=40.0))["final"]["pages_sharing"]
    kernel = run_kernel(kc.vm_keys(host), knobs, timeout=40.0, expect_sharing=int(expect), settle=0.5)
    if "skipped" in kernel:
        pytest.skip(kernel["skipped"])
    rates = kc.scan_rates(kernel)
    rate = kc.scan_rate(kernel)
    model = kc.run_model(knobs, page_cost=kc.page_cost_for(rates, knobs), seconds=40.0, stop_sharing=expect,
                         settle=0.5)
    km, mm = kc.milestones(kernel), kc.milestones(model)
    for c in ("pages_shared", "pages_sharing", "pages_unshared", "ksm_zero_pages"):
        assert mm["final"][c] == km["final"][c], c
    # nothing merges in the first full scan, in either
    assert km["first"]["scanned"] >= PAGES and mm["first"]["scanned"] >= PAGES
    tol_pages = 2 * rate * 0.05 + 0.01 * PAGES
    for m in ("first", "half", "all"):
        assert abs(mm[m]["scanned"] - km[m]["scanned"]) <= tol_pages, (m, km[m], mm[m])
        assert abs(mm[m]["t"] - km[m]["t"]) <= 0.10 * km[m]["t"] + 0.1, (m, km[m], mm[m])
