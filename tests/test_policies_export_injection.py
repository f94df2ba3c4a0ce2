"""Exports are escaped for their target: hostile VM names and salts (quotes, $(), backticks, ;,
unicode, XML and PowerShell metacharacters) go through every exporter and come back unchanged when
the output is parsed as its target would; the cgroup script, run by bash and sh against a temporary
tree, writes exactly the expected files. Names no target can hold are refused when read."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memtune.cli import main_group
from memtune.core.names import UNSAFE_CATEGORIES, name_problem
from memtune.core.scenario import scenario_from_dict
from memtune.errors import UserError
from memtune.policies import policy_from_dict, resolve_vms
from memtune.policies.apply import default_registry, min_free_pct
from memtune.policies.export import PS_SINGLE_QUOTES, entitlements, export_policy
from memtune.units import GiB, KiB, MiB

FRAGMENTS = ['"', "'", "`", "$(touch PWNED)", "`touch PWNED`", ";touch PWNED;", "&& touch PWNED", "|", "\\",
             "$HOME", "${IFS}", "<", ">", "&", "&amp;", "<!--", "-->", "--", "]]>", "<x a='1'/>", "*", "?",
             "[", "]", "{a,b}", "~", "!", "#", "%", " ", "-", "$x", "@(", "$null", "\u2018", "\u2019",
             "\u201a", "\u201b", "\u201c", "\u201d", "é", "名", "😀", "|22", "|7C", "\\u000a", "%n", "."]
SAFE_CHARS = st.characters(exclude_categories=tuple(UNSAFE_CATEGORIES))


def hostile(slash: bool = True) -> st.SearchStrategy[str]:
    parts = st.one_of(st.sampled_from(FRAGMENTS), st.text(SAFE_CHARS, min_size=1, max_size=3))
    names = st.lists(parts, min_size=1, max_size=6).map("".join)
    names = names.filter(lambda n: name_problem(n) is None)
    if not slash:
        names = names.filter(lambda n: "/" not in n and n not in (".", ".."))
    return names


POLICY = policy_from_dict({"name": "inj", "settings": {"Mem.IdleTax": 50},
                           "defaults": {"shares": "high", "maxmemctl": "50%"}}, "inj.toml")
REGISTRY = default_registry()
HOST = 16 * GiB


def scenario(names: list[str], salts: list[str]):
    vms = []
    for i, (name, salt) in enumerate(zip(names, salts, strict=True)):
        vm = {"name": name, "memory": "2 GiB", "reservation": f"{256 * (i % 3)} MiB", "salt": salt,
              "workload": {"wss": 0.2}}
        if i % 2:
            vm["limit"] = "1536 MiB"
        vms.append(vm)
    return scenario_from_dict({"name": "inj", "host": {"memory": "16 GiB"}, "vm": vms}, "inj.toml")


def export(fmt, sc):
    return export_policy(POLICY, fmt, sc, registry=REGISTRY)


def kib_up(n: float) -> int:
    return -(-int(n) // KiB)


def expected(sc):
    """VM name -> the values each format must carry, from the resolved policy."""
    vms = resolve_vms(POLICY, sc)
    ent = entitlements(vms, sc.host.memory, min_free_pct(POLICY, sc))
    out = {}
    for v, e in zip(vms, ent, strict=True):
        limited = v.limit is not None and v.limit < v.memory
        out[v.name] = {
            "vmx": {"sched.mem.min": str(round(v.reservation / MiB)), "sched.mem.shares": str(v.shares),
                    "sched.mem.pshare.salt": v.salt, "sched.mem.maxmemctl": str(round(v.maxmemctl / MiB)),
                    **({"sched.mem.max": str(round(v.limit / MiB))} if limited else {})},
            "libvirt": {"soft_limit": kib_up(e + v.overhead), "min_guarantee": kib_up(v.reservation),
                        **({"hard_limit": kib_up(v.limit + v.overhead)} if limited else {})},
            "cgroup": {"memory.min": str(kib_up(v.reservation + v.overhead) * KiB),
                       "memory.low": str(kib_up(e + v.overhead) * KiB),
                       "memory.max": str(kib_up(v.limit + v.overhead) * KiB) if limited else "max"},
            "salt": v.salt,
        }
    return out


VM_LISTS = st.lists(hostile(), min_size=1, max_size=3, unique=True)
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- .vmx ----------------------------------------------------------------------------------------

VMX_LINE = re.compile(r'([a-z.]+) = "([^"]*)"')


def parse_vmx(text: str) -> dict[str, dict[str, str]]:
    """Blocks ``# NAME.vmx`` after a blank line, then ``key = "value"`` lines with |XX escapes."""
    out: dict[str, dict[str, str]] = {}
    lines = text.split("\n")
    cur = None
    for prev, line in zip([""] + lines, lines, strict=False):
        if prev == "" and line.startswith("# ") and line.endswith(".vmx"):
            cur = out.setdefault(line[2:-4], {})
        elif line.startswith("#") or not line:
            continue
        else:
            m = VMX_LINE.fullmatch(line)
            assert m, f"not a vmx line: {line!r}"
            assert cur is not None
            cur[m.group(1)] = re.sub(r"\|([0-9A-F]{2})", lambda g: chr(int(g.group(1), 16)), m.group(2))
    return out


@pytest.mark.slow
@EXAMPLES
@given(names=VM_LISTS, data=st.data())
def test_vmx_parses_back_to_the_same_names_and_values(names, data):
    salts = data.draw(st.lists(hostile(), min_size=len(names), max_size=len(names)))
    sc = scenario(names, salts)
    got = parse_vmx(export("vmx", sc))
    want = {name: e["vmx"] for name, e in expected(sc).items()}
    assert got == want


# --- PowerShell ----------------------------------------------------------------------------------

def ps_tokens(line: str) -> tuple[str, list[str]]:
    """(``line`` with each single-quoted literal replaced by ``'S'``, the literals' values), read as
    PowerShell's tokenizer does: any of ' ‘ ’ ‚ ‛ opens and closes a literal, two in a row are one."""
    shape, values, i = [], [], 0
    while i < len(line):
        ch = line[i]
        if ch not in PS_SINGLE_QUOTES:
            shape.append(ch)
            i += 1
            continue
        i += 1
        val = []
        while True:
            assert i < len(line), f"unterminated literal: {line!r}"
            if line[i] in PS_SINGLE_QUOTES:
                if i + 1 < len(line) and line[i + 1] in PS_SINGLE_QUOTES:
                    val.append(line[i + 1])
                    i += 2
                    continue
                i += 1
                break
            val.append(line[i])
            i += 1
        shape.append("'S'")
        values.append("".join(val))
    return "".join(shape), values


GET_VM = r"(?:Get-VM -Name 'S'|Get-VM \| Where-Object Name -eq 'S')"
PS_HOST = re.compile(r"Get-VMHost \| Get-AdvancedSetting -Name 'S' \| Set-AdvancedSetting -Value \d+ "
                     r"-Confirm:\$false")
PS_VM = re.compile(
    GET_VM + r" \| Get-VMResourceConfiguration \| Set-VMResourceConfiguration "
    r"-MemReservationGB [\d.]+ -MemLimitGB (?:\$null|[\d.]+) -MemSharesLevel High"
)
PS_ADV = re.compile(
    r"New-AdvancedSetting -Entity \(" + GET_VM + r"\) -Name 'S' -Value 'S' -Force -Confirm:\$false"
)


@pytest.mark.slow
@EXAMPLES
@given(names=VM_LISTS, data=st.data())
def test_powercli_parses_back_to_the_same_names_and_values(names, data):
    salts = data.draw(st.lists(hostile(), min_size=len(names), max_size=len(names)))
    sc = scenario(names, salts)
    text = export("powercli", sc)
    configured, advanced = [], {}
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        shape, values = ps_tokens(line)
        if PS_HOST.fullmatch(shape):
            assert values == ["Mem.IdleTax"]
            continue
        if PS_VM.fullmatch(shape):
            configured.append(values[0])
        else:
            assert PS_ADV.fullmatch(shape), f"unexpected PowerShell shape {shape!r} from {line!r}"
            vm, opt, val = values
            advanced.setdefault(vm, {})[opt] = val
        # -Name takes wildcards: a name with one is matched with -eq instead
        assert ("Get-VM -Name" in shape) == (not any(c in values[0] for c in "*?[]`"))
    want = expected(sc)
    assert configured == list(want)
    assert advanced == {
        name: {"sched.mem.pshare.salt": e["salt"], "sched.mem.maxmemctl": e["vmx"]["sched.mem.maxmemctl"]}
        for name, e in want.items()
    }


# --- libvirt XML ---------------------------------------------------------------------------------


@pytest.mark.slow
@EXAMPLES
@given(names=VM_LISTS)
def test_libvirt_xml_parses_back_to_the_same_names_and_values(names):
    sc = scenario(names, ["s"] * len(names))
    root = ET.fromstring(export("libvirt", sc))
    assert root.tag == "memtune-policy" and root.get("policy") == "inj" and root.get("scenario") == "inj"
    got = {}
    for dom in root.findall("domain"):
        assert [c.tag for c in dom] == ["name", "memtune"]
        tune = dom.find("memtune")
        assert all(c.get("unit") == "KiB" and not len(c) for c in tune)
        got[dom.findtext("name")] = {c.tag: int(c.text) for c in tune}
    assert got == {name: e["libvirt"] for name, e in expected(sc).items()}


# --- cgroup v2 shell script ----------------------------------------------------------------------

SHELLS = [sh for sh in ("bash", "sh") if shutil.which(sh)]


def run_cgroup_script(text: str, names: list[str], tmp: Path, shell: str) -> dict[Path, str]:
    """Run the script with CGROUP_ROOT in ``tmp``; returns every file under ``tmp`` afterwards."""
    root, cwd, home = tmp / "cgroup", tmp / "cwd", tmp / "home"
    for d in (root, cwd, home):
        d.mkdir()
    for name in names:
        (root / name).mkdir()
    script = tmp / "policy.sh"
    script.write_text(text)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CGROUP_ROOT": str(root)}
    res = subprocess.run([shell, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and not res.stdout and not res.stderr, (res.returncode, res.stdout, res.stderr)
    script.unlink()
    return {p.relative_to(tmp): p.read_text() for p in tmp.rglob("*") if not p.is_dir()}


@pytest.mark.slow
@pytest.mark.parametrize("shell", SHELLS)
@EXAMPLES
@given(names=st.lists(hostile(slash=False), min_size=1, max_size=3, unique=True))
def test_cgroup_script_writes_exactly_the_expected_files(names, shell, tmp_path_factory):
    sc = scenario(names, ["s"] * len(names))
    tmp = tmp_path_factory.mktemp("cg")
    files = run_cgroup_script(export("cgroup", sc), names, tmp, shell)
    want = {
        Path("cgroup", name, key): f"{value}\n"
        for name, e in expected(sc).items()
        for key, value in e["cgroup"].items()
    }
    assert files == want


def test_cgroup_script_defaults_to_machine_slice():
    text = export("cgroup", scenario(["a"], ["s"]))
    assert 'CGROUP_ROOT="${CGROUP_ROOT:-/sys/fs/cgroup/machine.slice}"' in text.splitlines()
    assert "set -eu" in text.splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a/b", "..", ".", "../escape"])
def test_cgroup_refuses_names_that_are_not_one_directory(name):
    with pytest.raises(UserError, match=r"^inj.toml: VM '.*': not usable as a cgroup directory name"):
        export("cgroup", scenario([name], ["s"]))


# --- the boundary: names no target can hold ------------------------------------------------------

UNSAFE_CHARS = st.characters(categories=("Cc", "Cf", "Zl", "Zp", "Co"))


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(prefix=hostile(), bad=UNSAFE_CHARS, suffix=st.text(SAFE_CHARS, max_size=3))
def test_scenario_refuses_names_with_control_or_line_break_characters(prefix, bad, suffix):
    name = prefix + bad + suffix
    with pytest.raises(UserError) as err:
        scenario([name], ["s"])
    assert str(err.value).startswith("inj.toml: vm[0].name: ")
    assert "\n" not in str(err.value) and "\r" not in str(err.value)
    with pytest.raises(UserError, match=r"^inj.toml: vm\[0\].salt: "):
        scenario(["ok"], [name])


@pytest.mark.parametrize("name", ["", "   ", "x" * 81, "a\nb", "a\u2028b", "evil\u202eexe.txt", "tab\there"])
def test_policy_refuses_names_no_target_can_hold(name):
    for data, field in (
        ({"name": name}, "name"),
        ({"name": "p", "vm": [{"name": name, "shares": "low"}]}, "vm[0].name"),
        ({"name": "p", "defaults": {"salt": name}}, "defaults.salt"),
    ):
        with pytest.raises(UserError) as err:
            policy_from_dict(data, "p.toml")
        msg = str(err.value)
        assert msg.startswith(f"p.toml: {field}: ") and "\n" not in msg


def test_the_name_from_the_issue_survives_import_and_cannot_run(tmp_path):
    """`x"; touch PWNED; echo "$(id)` imported from esxtop, exported as a cgroup script and run."""
    name = 'x"; touch PWNED; echo "$(id)'
    csv_path = tmp_path / "cap.csv"
    gcol = f"\\\\esx\\Group Memory(7:{name})"
    header = [
        "(PDH-CSV 4.0) (UTC)(0)",
        "\\\\esx\\Memory\\Machine MBytes",
        f"{gcol}\\Memory Size MBytes",
        f"{gcol}\\Touched MBytes",
    ]
    rows = [[f"05/15/2017 06:{m:02d}:00", "16384", "2048", "512"] for m in range(10)]
    csv_path.write_text(
        "\n".join(",".join('"' + c.replace('"', '""') + '"' for c in r) for r in [header, *rows]) + "\n"
    )
    scen = tmp_path / "imported.toml"
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(csv_path), "--out", str(scen)])
    assert res.exit_code == 0, res.output
    script = tmp_path / "out.sh"
    res = CliRunner().invoke(
        main_group,
        [
            "policy",
            "export",
            "esxi-default",
            "--format",
            "cgroup",
            "--scenario",
            str(scen),
            "-o",
            str(script),
        ],
    )
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    run.mkdir()
    files = run_cgroup_script(script.read_text(), [name], run, "bash")
    assert sorted(p.name for p in files) == ["memory.low", "memory.max", "memory.min"]
    assert all(p.parent == Path("cgroup", name) for p in files)


def test_import_esxtop_refuses_a_group_name_with_a_newline(tmp_path):
    csv_path = tmp_path / "cap.csv"
    gcol = "\\\\esx\\Group Memory(7:web\n# injected)"
    header = ["(PDH-CSV 4.0) (UTC)(0)", f"{gcol}\\Memory Size MBytes", f"{gcol}\\Touched MBytes"]
    rows = [[f"05/15/2017 06:{m:02d}:00", "2048", "512"] for m in range(3)]
    csv_path.write_text("\n".join(",".join('"' + c + '"' for c in r) for r in [header, *rows]) + "\n")
    res = CliRunner().invoke(main_group, ["import", "esxtop", str(csv_path)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"memtune: error: {csv_path}: header column 2: VM group ")


@pytest.mark.parametrize("fmt", ["vmx", "esxcli", "powercli", "libvirt", "cgroup"])
@pytest.mark.parametrize("bad", ["web\n# injected", "web\r", "web\u2028x", "\u202eweb"])
def test_every_exporter_refuses_unsafe_names_it_is_handed_directly(fmt, bad):
    """A Scenario built in code skips the loader's check; the exporter checks again."""
    sc = scenario(["web"], ["s"])
    sc = sc.replace(vms=(dataclasses.replace(sc.vms[0], name=bad),))
    if fmt == "esxcli":
        sc = sc.replace(name=bad)
    with pytest.raises(UserError) as err:
        export(fmt, sc)
    assert "\n" not in str(err.value) and "\r" not in str(err.value)
