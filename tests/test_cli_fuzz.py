"""No traceback for anything a user can cause: every command, with generated bad arguments and files.

Each command found in the CLI (walked from ``memtune.cli.main_group``, so a new command is fuzzed
without editing this file) is invoked in-process with arguments hypothesis draws from pools of
hostile values (negative, huge, non-finite, empty, 300 characters, control characters, shell
metacharacters), generated files (scenarios and policies with one field set to a hostile value,
esxtop captures, audit logs and journals with one cell or byte changed, binary garbage, empty and
non-UTF-8 files) and paths that cannot be read or written (missing, a directory, /proc, /dev/full,
a name over NAME_MAX). A few cases run in a subprocess to cover the console entry point.

Every invocation must exit 0, 1 or 2, raise nothing out of the CLI, print no traceback, and, when
it fails, end in exactly one ``memtune: error:`` line that is not an internal error (a bug), unless
click itself reports a usage error. ``GENERATED`` counts the invocations of a run.

Work is kept small where a value is valid: the scenarios are tiny, optimize's budget is a few
evaluations, serve runs --once at a high speed, and no value pool holds a valid large size.
Commands that change the host (``live cleanup``) are not fuzzed here.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memtune.cli import main_group

GENERATED = {"count": 0}
# commands that change the host are not fuzzed here (tests/test_live*.py cover them, root only)
SKIP = {("live", "cleanup"): "changes the host (removes cgroups, stops processes)",
        ("validate",): "runs the scenario on this host (cgroups, KSM, zram, swap)"}

# an optimize run that costs a few evaluations of a tiny scenario
SMALL_OPTIMIZE = ["--budget", "2", "--batch", "1", "--initial-points", "1", "--presets", "esxi-default",
                  "--no-plots", "--knobs", "reservation"]
TINY = {
    "name": "fuzz", "duration": "20s", "tick": "2s", "warmup": "4s", "seed": 3,
    "host": {"memory": "3 GiB", "page_scale": 64},
    "workloads": {"w": {"kind": "constant", "allocated": 0.6, "wss": 0.3, "touch_rate": 5000,
                        "write_fraction": 0.2}},
    "vm": [{"name": "web", "count": 2, "memory": "1 GiB", "workload": "w"},
           {"name": "db", "memory": "1 GiB", "workload": "w", "reservation": "256 MiB"}],
}
# (path into TINY, for the mutation) -> fields a hostile value replaces
SCENARIO_FIELDS = [
    ("duration",),
    ("tick",),
    ("warmup",),
    ("seed",),
    ("host", "memory"),
    ("host", "page_scale"),
    ("workloads", "w", "allocated"),
    ("workloads", "w", "wss"),
    ("workloads", "w", "touch_rate"),
    ("workloads", "w", "write_fraction"),
    ("workloads", "w", "kind"),
    ("vm", 0, "memory"),
    ("vm", 0, "count"),
    ("vm", 0, "name"),
    ("vm", 1, "reservation"),
    ("vm", 1, "limit"),
    ("vm", 1, "shares"),
    ("vm", 0, "workload"),
    ("settings", "Mem.IdleTax"),
    ("name",),
]
POLICY = {
    "name": "fuzz-policy",
    "description": "d",
    "settings": {"Mem.IdleTax": 50},
    "defaults": {"sched.mem.shares": "normal"},
    "vm": [{"name": "web-*", "sched.mem.min": "10%", "sched.mem.max": "unlimited"}],
}
POLICY_FIELDS = [
    ("name",),
    ("settings", "Mem.IdleTax"),
    ("settings", "Mem.ShareScanTime"),
    ("defaults", "sched.mem.shares"),
    ("vm", 0, "name"),
    ("vm", 0, "sched.mem.min"),
    ("vm", 0, "sched.mem.max"),
    ("vm", 0, "sched.mem.maxmemctl"),
]
TOML_VALUES = [
    "inf",
    "-inf",
    "nan",
    "-1",
    "0",
    "1e308",
    "100000000000000000000000000000",
    '""',
    '"abc"',
    '"-1 GiB"',
    '"1 PiB"',
    '"0 B"',
    '"inf GiB"',
    '"nan"',
    "true",
    "[]",
    "{}",
    '"x\\ny"',
    '"a\\"; touch PWNED; echo \\""',
    '"' + "v" * 300 + '"',
    '"$(id)"',
    '"\\u0000"',
    "1.5",
    "-0.5",
    '"5"',
    '"1e400 s"',
    '"-5s"',
]
STRINGS = [
    "",
    "-1",
    "0",
    "1",
    "99999",
    "1e309",
    "inf",
    "-inf",
    "nan",
    "abc",
    "x" * 300,
    "1.5",
    " ",
    "ü",
    "1 GiB",
    "10s",
    "-5s",
    "0x10",
    "{",
    "a=b",
    "a=",
    "=1",
    "$(id)",
    "'\"",
    "a\nb",
    "\t",
    "%s%n",
    "Mem.IdleTax=500",
    "Mem.IdleTax=nan",
    "web=-1",
    "nope.*",
    "web-*",
    "--",
    "-",
]


def _toml_with(data: dict, path: tuple, raw: str) -> str:
    """``data`` as TOML with the value at ``path`` replaced by the TOML text ``raw``."""
    import tomli_w

    marker = "__FUZZ_MARKER__"
    d = json.loads(json.dumps(data))
    node = d
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = marker
    return tomli_w.dumps(d).replace(f'"{marker}"', raw)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Files that stay the same for every example: valid ones to mutate or to succeed with."""
    import tomli_w

    root = tmp_path_factory.mktemp("fuzz")
    (root / "tiny.toml").write_text(tomli_w.dumps(TINY))
    (root / "policy.toml").write_text(tomli_w.dumps(POLICY))
    from test_esxtop import write_capture

    write_capture(root / "capture.csv")
    r = CliRunner().invoke(
        main_group, ["simulate", str(root / "tiny.toml"), "--audit-log", str(root / "audit.log")]
    )
    assert r.exit_code == 0, r.output
    run = root / "run"
    r = CliRunner().invoke(main_group, ["optimize", str(root / "tiny.toml"), "--out", str(run),
                                        *SMALL_OPTIMIZE])
    assert r.exit_code == 0, r.output
    (root / "adir").mkdir()
    (root / "empty").write_text("")
    (root / "binary").write_bytes(bytes(range(256)) * 4)
    (root / "latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    modules = root / "mods"
    modules.mkdir()
    (modules / "fuzz_raiser.py").write_text("raise RuntimeError('no config')\n")
    (modules / "fuzz_syntax.py").write_text("def f(:\n")
    (modules / "fuzz_typo.py").write_text(
        "from memtune import hookimpl\n\n@hookimpl\ndef memtune_tikc(host):\n    pass\n"
    )
    sleeper = subprocess.Popen(["sleep", "600"])
    yield root, sleeper.pid
    sleeper.kill()
    sleeper.wait()
    print(f"\ntest_cli_fuzz: {GENERATED['count']} generated invocations")


def _mutated_bytes(data: bytes, pos: int, byte: int, cut: bool) -> bytes:
    """``data`` with the byte at ``pos`` (modulo its length) replaced, or cut off there."""
    pos %= max(len(data), 1)
    return data[:pos] if cut else data[:pos] + bytes([byte]) + data[pos + 1 :]


FIXED_FILES = [
    "tiny.toml",
    "policy.toml",
    "capture.csv",
    "audit.log",
    "missing.toml",
    "adir",
    "empty",
    "binary",
    "latin1.toml",
    "/proc/memtune-nope/x",
    "/dev/null",
    "/dev/zero",
    "n" * 300,
    "missing-dir/sub/x",
    "run/journal.jsonl",
]
BAD_OUTS = ["/proc/memtune-nope/x", "/dev/full", "adir", "tiny.toml", "n" * 300, "missing-dir/sub/x", ""]


@st.composite
def files(draw) -> tuple:
    """A file to hand in where one is expected: generated, valid, or one that cannot be used (a
    description; :func:`realize` writes it)."""
    kind = draw(st.sampled_from(["scenario", "scenario", "policy", "capture", "audit", "garbage", "fixed"]))
    if kind == "scenario":
        return ("scenario", draw(st.sampled_from(SCENARIO_FIELDS)), draw(st.sampled_from(TOML_VALUES)))
    if kind == "policy":
        return ("policy", draw(st.sampled_from(POLICY_FIELDS)), draw(st.sampled_from(TOML_VALUES)))
    if kind == "capture" and draw(st.booleans()):
        return (
            "cell",
            draw(st.sampled_from(["nan", "-1e30", "inf", "", "x", "1e400", "-0"])),
            draw(st.integers(1, 10**6)),
            draw(st.integers(0, 10**6)),
        )
    if kind in ("capture", "audit"):
        return (
            "bytes",
            "capture.csv" if kind == "capture" else "audit.log",
            draw(st.integers(0, 10**6)),
            draw(st.integers(0, 255)),
            draw(st.booleans()),
        )
    if kind == "garbage":
        return ("garbage", draw(st.binary(max_size=200)))
    return ("fixed", draw(st.sampled_from(FIXED_FILES)))


@st.composite
def out_paths(draw) -> tuple:
    """Where a command is asked to write: fresh, existing, unwritable or not a directory/file."""
    kind = draw(st.sampled_from(["fresh", "fresh", "bad", "run", "journal"]))
    if kind == "fresh":
        return ("fresh",)
    if kind == "run":
        return ("fixed", "run")
    if kind == "journal":  # a copy of a finished run with one journal byte changed or cut
        return ("journal", draw(st.integers(0, 10**6)), draw(st.integers(0, 255)), draw(st.booleans()))
    return ("fixed", draw(st.sampled_from(BAD_OUTS)))


def realize(token: tuple | str, root: Path, work: Path, n: int) -> str:
    """The command-line argument a drawn description stands for (files written into ``work``)."""
    if isinstance(token, str):
        return token
    kind, *rest = token
    path = work / f"f{n}"
    if kind == "scenario":
        path.write_text(_toml_with(TINY, rest[0], rest[1]))
    elif kind == "policy":
        path.write_text(_toml_with(POLICY, rest[0], rest[1]))
    elif kind == "cell":
        lines = (root / "capture.csv").read_text().splitlines()
        row = rest[1] % (len(lines) - 1) + 1
        cells = lines[row].split(",")
        cells[rest[2] % len(cells)] = f'"{rest[0]}"'
        lines[row] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")
    elif kind == "bytes":
        path.write_bytes(_mutated_bytes((root / rest[0]).read_bytes(), *rest[1:]))
    elif kind == "garbage":
        path.write_bytes(rest[0])
    elif kind == "fixed":
        return rest[0] if rest[0].startswith("/") or rest[0] == "" else str(root / rest[0])
    elif kind == "fresh":
        pass
    elif kind == "journal":
        shutil.copytree(root / "run", path)
        data = (root / "run" / "journal.jsonl").read_bytes()
        (path / "journal.jsonl").write_bytes(_mutated_bytes(data, *rest))
    return str(path)


# per option (by its longest flag) or argument name: values other than the generic STRINGS; work-sized
# options get no valid large value
def pools(pid: int) -> dict[str, st.SearchStrategy]:
    f, o = files(), out_paths()
    small_int = st.sampled_from(
        ["-1", "0", "abc", "", "1.5", "1e309", "2", "x" * 300, "99999999999999999999"]
    )
    dur = st.sampled_from(
        ["-1s", "0", "0s", "inf", "nan", "abc", "10s", "1e309s", "", "5us", "-inf s", "1 GiB", "1e300s",
         "400d", "1"]
    )
    port = st.sampled_from(["-1", "99999", "abc", "0", "65536", "1e3", ""])
    bind = st.sampled_from(["127.0.0.1", "::1", "localhost", "999.1.1.1", "256.0.0.1", "not_a_host"])
    names = st.sampled_from(
        ["small", "tiny", "nope", "esxi-default", "esxi-legacy-tps", "", "x" * 300, "../etc", "web-*"]
    )
    modules = st.sampled_from(
        [
            "fuzz_raiser",
            "fuzz_syntax",
            "fuzz_typo",
            "./fuzz_raiser.py",
            "fuzz_raiser.py",
            "no_such_module",
            "",
            "x" * 300,
            "memtune.plugins.balloon",
            "a b",
            "json",
        ]
    )
    plugin_names = st.sampled_from(["balloon", "tps", "core", "nope", "", "x" * 300, "page_reporting"])
    return {
        "scenario": st.one_of(f, names),
        "policy": st.one_of(f, names),
        "--policy": st.one_of(f, names),
        "--scenario": st.one_of(f, names),
        "name": st.one_of(names, st.sampled_from(STRINGS)),
        "log": f,
        "csv_file": f,
        "--key-file": f,
        "--image": f,
        "--device": f,
        "--out": o,
        "--output": o,
        "--dir": o,
        "--metrics-out": o,
        "--audit-log": o,
        "directory": o,
        "--scenario-out": o,
        "--budget": small_int,
        "--patience": small_int,
        "--repeats": small_int,
        "--batch": small_int,
        "--initial-points": small_int,
        "--reads": small_int,
        "--wss-points": small_int,
        "--workers": st.sampled_from(["-1", "0", "abc", "1", ""]),
        "--duration": dur,
        "--time-limit": dur,
        "--slo-p99": dur,
        "--since": dur,
        "--seed": st.sampled_from(["-1", "0", "abc", "4294967296", "99999999999999999999", "1e3", "7"]),
        "--speed": st.sampled_from(["0", "-1", "nan", "inf", "abc", "1e9", "-inf", ""]),
        "--sample": st.sampled_from(["0", "-1", "nan", "2", "abc", "0.5", "inf"]),
        "--port": port,
        "--metrics-port": port,
        "--bind": bind,
        "--metrics-bind": bind,
        "--dask-scheduler": st.sampled_from(
            ["not-an-address", "tcp://127.0.0.1:1", "tcp://127.0.0.1:99999", "", "tcp://[::1]:0"]
        ),
        "--pid": st.sampled_from(["-1", "0", "abc", "999999999", str(pid), "1e3"]),
        "--plugin": modules,
        "--disable-plugin": plugin_names,
        "--host-memory": st.sampled_from(
            ["inf", "-1 GiB", "abc", "0", "8 GiB", "nan GiB", "1e400 GiB", "12"]
        ),
        "--wait": st.sampled_from(["-1", "nan", "inf", "abc", "0"]),
        "--knobs": st.sampled_from(["reservation", "nope.*", "", ",", "Mem.IdleTax,web.limit", "x" * 300]),
        "--fix": st.sampled_from(
            [
                "Mem.IdleTax=500",
                "Mem.IdleTax=nan",
                "Mem.IdleTax=",
                "=1",
                "web.limit=2",
                "Mem.IdleTax=50",
                "nope=1",
                "Mem.IdleTax=inf",
            ]
        ),
        "--weight": st.sampled_from(["web=-1", "web=nan", "web=inf", "nope=1", "web", "=", "web=2"]),
        "--presets": st.sampled_from(["esxi-default", "", ",", "nope", "esxi-default,nope"]),
    }


# options every invocation of a command starts with (generated ones come after and win): small work
PREFIX = {
    ("optimize",): [*SMALL_OPTIMIZE, "--duration", "10s"],
    ("calibrate",): ["--repeats", "1", "--reads", "10"],
    ("simulate",): ["--duration", "20s"],
    ("serve",): ["--speed", "1e9", "--duration", "20s"],  # serve runs in real time x speed
    ("profile",): ["--wss-points", "2"],
}
SUFFIX = {("serve",): ["--once"]}  # never the default --loop: it serves until a signal
NEVER = {
    ("serve",): {"--hold"},  # keeps serving after the run until a signal, by design
    ("optimize",): {"--confirm"},
}  # --confirm live runs the policies on this host


def leaf_commands() -> list[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(main_group)
    out = []

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), (*path, name))
        elif path not in SKIP:
            out.append((path, cmd))

    walk(main_group, ())
    return out


COMMANDS = leaf_commands()
# examples per command: the ones that do real work when their input is valid get fewer
EXAMPLES = {
    ("calibrate",): 4,
    ("optimize",): 20,
    ("serve",): 15,
    ("profile",): 15,
    ("live", "status"): 3,
    ("policy", "list"): 5,
    ("scenario", "list"): 5,
}
DEFAULT_EXAMPLES = 25


@st.composite
def invocation(draw, path: tuple[str, ...], cmd: click.Command, pid: int) -> list:
    table = pools(pid)
    generic = st.sampled_from(STRINGS)
    args: list = [*path, *PREFIX.get(path, [])]
    options = [
        p
        for p in cmd.params
        if isinstance(p, click.Option) and "--help" not in p.opts and not set(p.opts) & NEVER.get(path, set())
    ]
    for p in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        flag = max(p.opts, key=len)
        if p.is_flag:
            args.append(draw(st.sampled_from([*p.opts, *p.secondary_opts])))
            continue
        if isinstance(p.type, click.Choice):
            value = draw(st.one_of(st.sampled_from([str(c) for c in p.type.choices]), generic))
        else:
            value = draw(table.get(flag, generic))
        args += [flag, value]
    for p in cmd.params:
        if isinstance(p, click.Argument) and (p.required or draw(st.booleans())):
            args.append(draw(table.get(p.name, generic)))
    if draw(st.integers(0, 9)) == 0:
        args.append(draw(generic))  # a stray extra argument
    return [*args, *SUFFIX.get(path, [])]


def check(args: list[str], result, path: tuple[str, ...] = ()) -> None:
    where = f"memtune {' '.join(repr(a) for a in args)}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"{where}: exception escaped the CLI:\n{tb}")
    assert result.exit_code in (0, 1, 2), (where, result.exit_code, result.output)
    assert "Traceback" not in result.output, (where, result.output)
    if path == ("audit", "verify") and result.exit_code == 1 and not result.stderr:
        assert result.stdout.count("\n") == 1, (where, result.stdout)  # a finding: the first broken record
        return
    if result.exit_code != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("memtune: error:")]
        if errors or "Usage:" not in result.stderr:  # click's usage errors are its own format
            assert len(errors) == 1, (where, result.stderr)
            assert "internal error" not in errors[0], (where, errors[0])


@pytest.fixture(scope="module", autouse=True)
def memory_ceiling():
    """An input that makes a run allocate without bound fails here as a MemoryError with the drawn
    arguments (an internal error, which ``check`` reports), not by the OOM killer ending the suite."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vsize = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    ceiling = vsize + (8 << 30)
    if hard == resource.RLIM_INFINITY or ceiling <= hard:
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def work(base):
    d = Path(tempfile.mkdtemp(prefix="memtune-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_with_generated_bad_input_ends_in_one_line(base, work, monkeypatch, path, cmd):
    root, pid = base
    monkeypatch.syspath_prepend(str(root / "mods"))
    monkeypatch.chdir(work)  # `plugin new` and friends write into the current folder
    for env in ("MEMTUNE_PLUGINS", "MEMTUNE_DISABLE_PLUGINS", "MEMTUNE_AUDIT_KEY"):
        monkeypatch.delenv(env, raising=False)

    @settings(
        max_examples=EXAMPLES.get(path, DEFAULT_EXAMPLES),
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(drawn=invocation(path, cmd, pid))
    def run(drawn):
        GENERATED["count"] += 1
        example = work / f"e{GENERATED['count']}"
        example.mkdir()
        args = [realize(token, root, example, n) for n, token in enumerate(drawn)]
        result = CliRunner().invoke(main_group, args)
        check(args, result, path)

    run()


# --- the console entry point in a subprocess: what only a real process shows -------------------------


def _memtune(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "memtune.cli", *args], capture_output=True, timeout=120, **kw
    )


@pytest.mark.parametrize(
    "args",
    [
        [b"simulate", b"\xff\xfe-not-utf8.toml"],  # a file name that is not UTF-8
        [b"policy", b"export", b"esxi-default", b"--format", b"esxcli", b"-o", b"/dev/full"],  # a full disk
        [b"policy", b"export", b"esxi-default", b"--format", b"esxcli", b"-o", b"/proc/memtune-nope/x"],
        [b"plugin", b"new", b"x" * 300],
        [b"simulate", b"small", b"-p", b"./plugin.py"],
        [b"audit", b"verify", b"/proc/self/mem"],
        [b"scenario", b"show", b"\x1b[31mred"],
    ],
)
def test_the_console_command_never_prints_a_traceback(base, args):
    GENERATED["count"] += 1
    r = _memtune(*args)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode in (1, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    if not err.startswith("Usage:"):  # click's usage errors are its own format
        assert err.count("\n") == 1 and err.startswith("memtune: error: "), err
    assert "\x1b" not in err  # control characters of a name are escaped


def test_debug_shows_the_traceback_of_a_failure(base):
    root, _ = base
    r = _memtune("--debug", "policy", "export", "esxi-default", "--format", "esxcli", "-o", "/dev/full")
    assert r.returncode == 1 and b"Traceback (most recent call last)" in r.stderr


def test_output_to_a_closed_pipe_is_not_a_traceback():
    r = subprocess.run(
        f"{sys.executable} -m memtune.cli scenario list | head -c 1 >/dev/null",
        shell=True,
        capture_output=True,
        timeout=60,
    )
    assert b"Traceback" not in r.stderr and b"Error" not in r.stderr, r.stderr


def test_fuzzed_commands_cover_the_cli():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {
        "simulate",
        "optimize",
        "serve",
        "policy export",
        "audit verify",
        "import esxtop",
        "plugin new",
        "profile",
        "calibrate",
        "scenario show",
        "plugins",
    } <= names
    assert not {" ".join(p) for p in SKIP} & names


@pytest.mark.parametrize("value", ["1e400 GiB", "1e309 B", "inf GiB"])
def test_a_size_too_large_for_a_number_is_a_usage_error(base, value):
    """Found by the fuzz test: ``import esxtop --host-memory '1e400 GiB'`` was an internal error."""
    root, _ = base
    args = ["import", "esxtop", str(root / "capture.csv"), "--host-memory", value]
    r = CliRunner().invoke(main_group, args)
    assert r.exit_code == 2 and r.stderr.startswith("memtune: error: --host-memory: "), r.output


@pytest.mark.parametrize("command", [["serve", "--once"], ["simulate"]])
def test_a_duration_too_large_for_a_number_is_a_usage_error(base, command):
    """Found by the fuzz test: ``serve --duration 1e309s`` was an internal error."""
    root, _ = base
    r = CliRunner().invoke(main_group, [*command, str(root / "tiny.toml"), "--duration", "1e309s"])
    assert r.exit_code == 2
    assert r.stderr == "memtune: error: --duration: must be at most 366 days (got '1e309s')\n"


def test_metrics_out_to_a_device_writes_into_it_and_leaves_the_node(base):
    # a temporary file renamed over /dev/full replaced the device with a regular file
    root, _ = base
    r = _memtune("simulate", str(root / "tiny.toml"), "--metrics-out", "/dev/full")
    assert r.returncode == 2 and b"No space left on device" in r.stderr, r.stderr
    assert Path("/dev/full").is_char_device()
