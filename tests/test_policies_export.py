"""Exporters: exact values and syntax for vmx, esxcli, PowerCLI, libvirt and cgroup v2."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.core.memstate import min_free
from memtune.core.scenario import load_scenario, scenario_from_dict
from memtune.core.vm import overhead_bytes
from memtune.errors import UserError
from memtune.policies import load_policy, policy_from_dict, resolve_vms
from memtune.policies.export import entitlements, export_policy
from memtune.units import GiB, KiB, MiB

POLICY = policy_from_dict({
    "name": "exp",
    "settings": {"Mem.ShareForceSalting": 0, "Mem.ShareScanTime": 30, "Mem.MemZipEnable": False,
                 "Mem.IdleTax": 50, "latency.dram": "90ns"},
    "defaults": {"shares": "low"},
    "vm": [
        {"name": "web-*", "reservation": "1 GiB", "limit": "4 GiB", "salt": "web's"},
        {"name": "db-01", "reservation": "1536 MiB", "shares": 30000, "maxmemctl": "50%"},
    ]}, "exp.toml")
SMALL = load_scenario("small")
OVER6 = overhead_bytes(6 * GiB)


def kib_up(n: float) -> int:
    return math.ceil(n / KiB)


def export(fmt: str, policy=POLICY, scenario=SMALL) -> str:
    return export_policy(policy, fmt, scenario)


def blocks(text: str, comment: str = "# ") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        m = re.match(rf"^{comment}(\S+?)(\.vmx)?$", line)
        if m:
            cur = out.setdefault(m.group(1), [])
        elif cur is not None and line and not line.startswith("#"):
            cur.append(line)
    return out


def test_vmx_lines_per_vm_in_mb():
    text = export("vmx")
    vm = blocks(text)
    assert len(vm) == 16
    assert vm["web-01"] == ['sched.mem.min = "1024"', 'sched.mem.max = "4096"', 'sched.mem.shares = "low"',
                            'sched.mem.pshare.salt = "web\'s"']
    assert vm["db-01"] == [
        'sched.mem.min = "1536"',
        'sched.mem.shares = "30000"',
        'sched.mem.maxmemctl = "3072"',
    ]
    assert vm["vdi-03"] == ['sched.mem.min = "0"', 'sched.mem.shares = "low"']
    assert "# sched.mem.max: unlimited (remove the line; memsize 6144 MB caps it)" in text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r'sched\.mem\.(min|max|shares|pshare\.salt|maxmemctl) = "[^"]*"', line), line


ESXCLI = re.compile(r'esxcli system settings advanced set -o /Mem/[A-Za-z]+ (-i -?\d+|-s "[^"]*")')


def test_esxcli_lines_match_the_documented_form():
    text = export("esxcli", scenario=None)
    cmds = [line for line in text.splitlines() if not line.startswith("#")]
    assert cmds == [
        "esxcli system settings advanced set -o /Mem/ShareForceSalting -i 0",
        "esxcli system settings advanced set -o /Mem/ShareScanTime -i 30",
        "esxcli system settings advanced set -o /Mem/MemZipEnable -i 0",
        "esxcli system settings advanced set -o /Mem/IdleTax -i 50",
    ]
    assert all(ESXCLI.fullmatch(c) for c in cmds)
    assert "# latency.dram = '90ns': model setting, no ESXi option" in text


def test_esxcli_exports_every_esxi_option_of_the_default_preset():
    text = export("esxcli", policy=load_policy("esxi-default"), scenario=None)
    cmds = {c.split()[6]: c.split()[8] for c in text.splitlines() if c.startswith("esxcli system")}
    assert cmds == {
        "/Mem/IdleTax": "75",
        "/Mem/SamplePeriod": "60",
        "/Mem/AllocGuestLargePage": "1",
        "/Mem/ShareForceSalting": "2",
        "/Mem/ShareScanTime": "60",
        "/Mem/ShareRateMax": "1024",
        "/Mem/MemZipEnable": "1",
        "/Mem/MemZipMaxPct": "10",
        "/Mem/CtlMaxPercent": "65",
    }
    assert "esxcli sched swap system set --hostcache-enabled false" in text


HOST_PS = re.compile(
    r"Get-VMHost \| Get-AdvancedSetting -Name '(Mem\.\w+)' \| "
    r"Set-AdvancedSetting -Value (-?\d+|'[^']*') -Confirm:\$false"
)
VM_PS = re.compile(
    r"Get-VM -Name '([^']+)' \| Get-VMResourceConfiguration \| Set-VMResourceConfiguration "
    r"-MemReservationGB ([\d.]+) -MemLimitGB (\$null|[\d.]+) -MemSharesLevel (Low|Normal|High|Custom)"
    r"( -NumMemShares \d+)?"
)
ADV_PS = re.compile(
    r"New-AdvancedSetting -Entity \(Get-VM -Name '([^']+)'\) -Name '(sched\.mem\.[\w.]+)' "
    r"-Value '((?:[^']|'')*)' -Force -Confirm:\$false"
)


def test_powercli_script_matches_the_documented_cmdlets():
    text = export("powercli")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    for line in lines:
        assert HOST_PS.fullmatch(line) or VM_PS.fullmatch(line) or ADV_PS.fullmatch(line), line
    host = dict(m.groups() for m in map(HOST_PS.fullmatch, lines) if m)
    assert host == {
        "Mem.ShareForceSalting": "0",
        "Mem.ShareScanTime": "30",
        "Mem.MemZipEnable": "0",
        "Mem.IdleTax": "50",
    }
    vms = {m.group(1): m.groups()[1:] for m in map(VM_PS.fullmatch, lines) if m}
    assert len(vms) == 16
    assert vms["web-02"] == ("1", "4", "Low", None)
    assert vms["db-01"] == ("1.5", "$null", "Custom", " -NumMemShares 30000")
    assert vms["batch-04"] == ("0", "$null", "Low", None)
    adv = [m.groups() for m in map(ADV_PS.fullmatch, lines) if m]
    assert ("web-03", "sched.mem.pshare.salt", "web''s") in adv
    assert ("db-01", "sched.mem.maxmemctl", "3072") in adv
    assert len(adv) == 5


def test_powercli_without_scenario_needs_one_for_vm_rules():
    with pytest.raises(UserError, match="^--scenario: format powercli writes per-VM values"):
        export("powercli", scenario=None)
    host_only = policy_from_dict({"name": "h", "settings": {"Mem.IdleTax": 10}}, "h")
    assert export("powercli", policy=host_only, scenario=None).splitlines()[1] == (
        "Get-VMHost | Get-AdvancedSetting -Name 'Mem.IdleTax' | Set-AdvancedSetting -Value 10 -Confirm:$false"
    )


def test_libvirt_memtune_parses_with_kib_values():
    text = export("libvirt")
    root = ET.fromstring(text)
    assert [d.findtext("name") for d in root.findall("domain")] == [vm.name for vm in SMALL.vms]
    tunes = root.findall("domain/memtune")
    assert len(tunes) == 16
    ent = entitlements(resolve_vms(POLICY, SMALL), SMALL.host.memory)
    names = [vm.name for vm in SMALL.vms]
    for i, tune in enumerate(tunes):
        assert {c.tag for c in tune} <= {"hard_limit", "soft_limit", "min_guarantee"}
        assert all(c.get("unit") == "KiB" for c in tune)
        vals = {c.tag: int(c.text) for c in tune}
        assert vals["soft_limit"] == kib_up(ent[i] + OVER6)
        if names[i].startswith("web-"):
            assert vals == {
                "hard_limit": kib_up(4 * GiB + OVER6),
                "soft_limit": vals["soft_limit"],
                "min_guarantee": 1048576,
            }
        else:
            assert "hard_limit" not in vals
    assert int(tunes[4].find("min_guarantee").text) == 1536 * 1024  # db-01


CG = re.compile(r'echo (\d+|max) > "\$CGROUP_ROOT"/([\w-]+)/(memory\.(?:min|low|max))')


def test_cgroup_v2_values_in_bytes():
    text = export("cgroup")
    vals: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if line.startswith("#") or line in (
            "set -eu",
            'CGROUP_ROOT="${CGROUP_ROOT:-/sys/fs/cgroup/machine.slice}"',
        ):
            continue
        m = CG.fullmatch(line)
        assert m, line
        vals.setdefault(m.group(2), {})[m.group(3)] = m.group(1)
    assert len(vals) == 16
    assert vals["web-01"]["memory.min"] == str(kib_up(GiB + OVER6) * KiB)
    assert vals["web-01"]["memory.max"] == str(kib_up(4 * GiB + OVER6) * KiB)
    assert vals["vdi-01"]["memory.min"] == str(kib_up(OVER6) * KiB)
    assert vals["vdi-01"]["memory.max"] == "max"
    for v in vals.values():
        assert int(v["memory.min"]) <= int(v["memory.low"])
        assert v["memory.max"] == "max" or int(v["memory.low"]) <= int(v["memory.max"])


# --- entitlements: shares under full contention ---------------------------------------------------


def _scenario(vms, memory="16 GiB"):
    return scenario_from_dict(
        {"name": "e", "host": {"memory": memory}, "vm": [{"workload": {"wss": 0.1}, **v} for v in vms]},
        "e.toml",
    )


def test_entitlement_splits_by_shares_and_clamps():
    sc = _scenario(
        [
            {"name": "a", "memory": "8 GiB", "shares": 1000},
            {"name": "b", "memory": "8 GiB", "shares": 3000},
            {"name": "c", "memory": "8 GiB", "shares": 4000, "limit": "2 GiB"},
            {"name": "d", "memory": "8 GiB", "shares": 1, "reservation": "1 GiB"},
        ]
    )
    pol = policy_from_dict({"name": "n"}, "n")
    vms = resolve_vms(pol, sc)
    avail = 16 * GiB - min_free(16 * GiB) - 4 * overhead_bytes(8 * GiB)
    ent = entitlements(vms, sc.host.memory)
    # round 1: c is pinned at its 2 GiB limit, d at its 1 GiB reservation; round 2: a and b would
    # split the rest 1:3, but 3/4 of it is more than b's 8 GiB, so b is pinned there and a gets the rest
    rest = avail - 2 * GiB - GiB
    assert rest * 3 / 4 > 8 * GiB > rest / 4
    assert ent[2] == 2 * GiB and ent[3] == GiB and ent[1] == 8 * GiB
    assert ent[0] == pytest.approx(rest - 8 * GiB, abs=1)


def test_entitlement_without_contention_is_the_limit():
    sc = _scenario([{"name": "a", "memory": "2 GiB"}, {"name": "b", "memory": "4 GiB", "limit": "3 GiB"}])
    ent = entitlements(resolve_vms(policy_from_dict({"name": "n"}, "n"), sc), sc.host.memory)
    assert list(ent) == [2 * GiB, 3 * GiB]
    assert np.all(ent >= 0)


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_export_to_file_and_errors(tmp_path):
    out = tmp_path / "policy.ps1"
    res = CliRunner().invoke(
        main_group,
        [
            "policy",
            "export",
            "esxi-legacy-tps",
            "--format",
            "powercli",
            "--scenario",
            "small",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "Get-AdvancedSetting -Name 'Mem.ShareForceSalting' | Set-AdvancedSetting -Value 0" in text
    assert (
        text.count("Set-VMResourceConfiguration -MemReservationGB 0 -MemLimitGB $null -MemSharesLevel Normal")
        == 16
    )
    res = CliRunner().invoke(main_group, ["policy", "export", "esxi-default", "--format", "cgroup"])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "memtune: error: --scenario: format cgroup writes per-VM values: give --scenario to resolve the "
        "policy's rules (names, patterns, percentages, 'active') into VMs"
    ]


def test_no_overcommit_reserve_exports_the_active_sets():
    text = export("vmx", policy=load_policy("no-overcommit-reserve"))
    vm = blocks(text)
    assert vm["web-01"][0] == 'sched.mem.min = "1536"'
    assert vm["db-04"][0] == 'sched.mem.min = "3072"'
    assert vm["batch-02"][0] == f'sched.mem.min = "{math.ceil(0.7 * 6144)}"'
    assert MiB  # sizes are in MiB ("MB" as vSphere writes them)
