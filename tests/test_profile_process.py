"""memtune profile on live processes: two children share 2000 known pages, each has unique random
pages; the working set over an interval; another user's process or image gives one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import memtune.cli.profile  # noqa: F401 - imported before fork/setuid (root-only site-packages)
from memtune.cli import main_group
from memtune.profile import ProcessSource, Profiler, page_hashes

PAGE = 4096
K = np.uint64(0x9E3779B97F4A7C15)

CHILD = textwrap.dedent("""
    import mmap, sys
    import numpy as np
    seed, shared, unique, hot = (int(x) for x in sys.argv[1:5])
    K = np.uint64(0x9E3779B97F4A7C15)
    # the same `shared` pages in every child: page i holds words (i*512 + j) * K
    a = mmap.mmap(-1, shared * 4096)
    a.madvise(mmap.MADV_NOHUGEPAGE)
    np.frombuffer(a, dtype=np.uint64)[:] = np.arange(shared * 512, dtype=np.uint64) * K
    # pages nobody else has
    b = mmap.mmap(-1, unique * 4096)
    b.madvise(mmap.MADV_NOHUGEPAGE)
    np.frombuffer(b, dtype=np.uint8)[:] = np.frombuffer(np.random.default_rng(seed).bytes(unique * 4096),
                                                        dtype=np.uint8)
    view = np.frombuffer(b, dtype=np.uint8)
    print("ready", flush=True)
    if hot:
        import select
        while not select.select([sys.stdin], [], [], 0.005)[0]:
            view[: hot * 4096 : 4096] += 1          # touch the first `hot` unique pages
    else:
        sys.stdin.readline()
""")


def expected_shared(shared: int) -> np.ndarray:
    words = np.arange(shared * 512, dtype=np.uint64) * K
    return page_hashes(words.view(np.uint8).reshape(shared, PAGE))


def expected_unique(seed: int, unique: int) -> np.ndarray:
    raw = np.frombuffer(np.random.default_rng(seed).bytes(unique * PAGE), dtype=np.uint8)
    return page_hashes(raw.reshape(unique, PAGE))


@pytest.fixture
def children():
    procs = []

    def start(seed, shared=2000, unique=500, hot=0):
        p = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(seed), str(shared), str(unique), str(hot)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return p

    yield start
    for p in procs:
        try:
            p.stdin.write("done\n")
            p.stdin.close()
        except OSError:
            pass
        p.wait(timeout=10)


@pytest.mark.slow
def test_two_children_share_their_known_pages(children):
    p1, p2 = children(1), children(2)
    prof = Profiler(sample=0.05, seed=0)
    prof.add(ProcessSource(p1.pid))
    prof.add(ProcessSource(p2.pid))
    r = prof.result()
    h1, h2 = prof.hashes(0), prof.hashes(1)
    shared = expected_shared(2000)
    u1, u2 = expected_unique(1, 500), expected_unique(2, 500)
    # every known shared page is there exactly once in each child, and in both
    assert np.isin(h1, shared).sum() == 2000 and np.isin(h2, shared).sum() == 2000
    # each child's random pages are in that child only, once
    assert np.isin(h1, u1).sum() == 500 and np.isin(h2, u1).sum() == 0
    assert np.isin(h2, u2).sum() == 500 and np.isin(h1, u2).sum() == 0
    s1, s2 = r["sources"]
    # shareable across sources: the 2000 known pages plus whatever the two interpreters share
    assert s1["shareable"] >= 2000 and s2["shareable"] >= 2000
    assert r["across"]["cross_pages_shared"] >= 2000
    # the 500 random pages are unique: at least those
    assert s1["unique"] >= 500 and s2["unique"] >= 500
    assert s1["pages"] == s1["zero"] + s1["shareable"] + s1["duplicate"] + s1["unique"]
    assert s1["details"]["pid"] == p1.pid and s1["pages"] >= 2500
    # the shared pattern (multiples of K) compresses badly, random pages not at all
    assert r["across"]["compress"]["lz4"]["sampled"] > 0


@pytest.mark.slow
def test_working_set_counts_touched_pages_only(children):
    # 4000 unique pages, the first 1000 touched continuously
    p = children(5, shared=1, unique=4000, hot=1000)
    res = CliRunner().invoke(
        main_group, ["profile", "--pid", str(p.pid), "--wss", "0.6s", "--wss-points", "3", "--json"]
    )
    assert res.exit_code == 0, res.output
    w = json.loads(res.output)["wss"][f"pid{p.pid}"]
    assert w["seconds"] == [0.2, 0.4, 0.6]
    # the hot 1000 pages (4000 KiB) are touched; the 3000 cold ones (12000 KiB) are not
    assert w["touched"] >= 1000 * PAGE
    assert w["touched"] < 1000 * PAGE + 3000 * PAGE
    assert w["touched_bytes"] == sorted(w["touched_bytes"])  # the curve only grows


def _as_nobody(args):
    """Run the CLI in a forked child that dropped root (uid 65534); returns (exit code, output)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            res = CliRunner().invoke(main_group, args)
            os.write(w, json.dumps([res.exit_code, res.output]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_another_users_process_is_one_line(children):
    p = children(9, shared=1, unique=1)
    code, out = _as_nobody(["profile", "--pid", str(p.pid)])
    assert code == 2
    assert out.count("\n") == 1 and f"pid {p.pid}: cannot read process: Permission denied" in out, out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_unreadable_image_is_one_line(tmp_path):
    img = tmp_path / "secret.img"
    img.write_bytes(b"\1" * PAGE)
    img.chmod(0)
    os.chmod(tmp_path, 0o755)
    code, out = _as_nobody(["profile", "--image", str(img)])
    assert code == 2
    assert out.count("\n") == 1 and f"{img}: cannot read image: Permission denied" in out, out
