"""KSM exports: the sysfs script sets what the policy says when run (in a scratch directory), the
ksmtuned.conf sources to the same values, and names cannot break out of their comments."""

from __future__ import annotations

import os
import subprocess

import pytest

from memtune.policies.export import export_policy
from memtune.policies.model import policy_from_dict


def _policy(settings: dict, name: str = "kvm") -> object:
    return policy_from_dict({"name": name, "settings": settings}, "<test policy>")


def _fake_sysfs(tmp_path, **values):
    d = tmp_path / "ksm"
    d.mkdir()
    defaults = {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20, "max_page_sharing": 256,
                "merge_across_nodes": 1, "use_zero_pages": 0, "smart_scan": 1, **values}
    for k, v in defaults.items():
        (d / k).write_text(f"{v}\n")
    return d


def _read(d) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in d.iterdir()}


def test_sysfs_script_sets_the_knobs_and_unmerges_only_to_change_max_page_sharing(tmp_path):
    pol = _policy({"memtune.sharing": "ksm", "ksm.pages_to_scan": 1000, "ksm.max_page_sharing": 512,
                   "ksm.use_zero_pages": 1})
    script = tmp_path / "ksm.sh"
    script.write_text(export_policy(pol, "ksm-sysfs"))
    d = _fake_sysfs(tmp_path, run=1)
    for shell in ("sh", "bash"):
        subprocess.run([shell, str(script)], check=True, env={**os.environ, "KSM_SYSFS": str(d)})
        got = _read(d)
        assert got == {"run": 1, "pages_to_scan": 1000, "sleep_millisecs": 20, "max_page_sharing": 512,
                       "merge_across_nodes": 1, "use_zero_pages": 1, "smart_scan": 1}
    text = export_policy(pol, "ksm-sysfs")
    assert text.count('echo 2 > "$KSM"/run') == 2        # guarded: only when a value must change


def test_ksmtuned_conf_sources_to_the_policy_values(tmp_path):
    pol = _policy({"ksmtuned.enabled": True, "ksmtuned.KSM_NPAGES_MAX": 5000, "ksmtuned.KSM_THRES_COEF": 30})
    conf = tmp_path / "ksmtuned.conf"
    conf.write_text(export_policy(pol, "ksmtuned"))
    out = subprocess.run(["sh", "-c", f". {conf}; echo $KSM_NPAGES_MAX $KSM_THRES_COEF $KSM_NPAGES_BOOST"],
                         check=True, capture_output=True, text=True).stdout.split()
    assert out == ["5000", "30", "300"]
    assert "systemctl enable --now ksmtuned" in conf.read_text()
    assert "run is left to ksmtuned" in export_policy(pol, "ksm-sysfs")


@pytest.mark.parametrize("fmt", ["ksm-sysfs", "ksmtuned"])
def test_a_hostile_policy_name_stays_in_its_comment(fmt, tmp_path):
    with pytest.raises(Exception, match="name"):
        export_policy(_policy({}, name="x\n; touch PWNED"), fmt)
    text = export_policy(_policy({}, name="x; touch PWNED $(id)"), fmt)
    assert all(line.startswith("#") or "PWNED" not in line for line in text.splitlines())
