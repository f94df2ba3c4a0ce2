"""memtune profile on memory images with known structure: exact counts, sampled compressibility
within its stated interval, the TOML a scenario loads and simulates, and one-line user errors."""

from __future__ import annotations

import glob
import os
import tomllib

import lz4.block
import numpy as np
import pytest
import zstandard
from click.testing import CliRunner

from memtune.cli import main_group
from memtune.core.scenario import load_scenario
from memtune.core.simulation import build_host, simulate
from memtune.profile import ImageSource, Profiler, profile_document, write_profile
from memtune.profile.analysis import ZSTD_LEVEL

PAGE = 4096


def real_file_pages(limit: int, skip: int = 0) -> list[bytes]:
    """Distinct non-zero 4 KiB pages cut from Python sources and binaries on this machine."""
    files = sorted(glob.glob("/usr/lib/python3*/**/*.py", recursive=True))
    files += sorted(glob.glob("/usr/bin/*"))[:40]
    seen: set[bytes] = set()
    out: list[bytes] = []
    for path in files:
        if not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        for i in range(0, len(data) - PAGE + 1, PAGE):
            p = data[i:i + PAGE]
            if p in seen or p == bytes(PAGE):
                continue
            seen.add(p)
            if len(seen) > skip:
                out.append(p)
            if len(out) == limit:
                return out
    raise RuntimeError("not enough file pages on this machine")


def rand_pages(rng: np.random.Generator, n: int) -> list[bytes]:
    return [rng.bytes(PAGE) for _ in range(n)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two images; returns paths and the construction-derived expectations."""
    d = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(7)
    files = real_file_pages(500)
    cross = rand_pages(rng, 200)            # in A once and in B once
    x = rng.bytes(PAGE)                     # 2 copies in A, 3 in B
    dups = rand_pages(rng, 10)              # 5 copies each, only in A
    a = [bytes(PAGE)] * 100 + [p for p in dups for _ in range(5)] + cross + [x, x] \
        + rand_pages(rng, 300) + files[:400]
    b = [bytes(PAGE)] * 30 + cross[::-1] + [x] * 3 + rand_pages(rng, 150) + files[400:]
    rng.shuffle(a)
    rng.shuffle(b)
    pa, pb = d / "a.img", d / "b.img"
    pa.write_bytes(b"".join(a))
    pb.write_bytes(b"".join(b) + b"\x01" * 100)      # a partial trailing page is ignored
    return {"a": pa, "b": pb, "pages_a": a, "pages_b": b}


def profile(paths, sample=1.0, seed=0):
    prof = Profiler(sample=sample, seed=seed)
    for p in paths:
        prof.add(ImageSource(str(p)), chunk_pages=256)     # several chunks per image
    return prof.result()


@pytest.mark.slow
def test_counts_are_exact(images):
    r = profile([images["a"], images["b"]])
    sa, sb = r["sources"]
    assert (sa["pages"], sa["zero"], sa["shareable"], sa["duplicate"], sa["duplicate_groups"]) \
        == (1052, 100, 202, 50, 10)
    assert sa["unique"] == 300 + 400
    assert (sb["pages"], sb["zero"], sb["shareable"], sb["duplicate"], sb["unique"]) == (483, 30, 203, 0, 250)
    assert sb["details"]["tail_bytes"] == 100
    acr = r["across"]
    # KSM: one page per repeated content (10 dup groups + 200 cross + x + the zero page) ...
    assert acr["ksm_pages_shared"] == 10 + 200 + 1 + 1
    # ... and the pages mapped onto them beyond the first
    assert acr["ksm_pages_sharing"] == 10 * 4 + 200 + 4 + (130 - 1)
    assert acr["saved_bytes_salting0"] == acr["ksm_pages_sharing"] * PAGE
    # salting 2 (inside each image only): A's duplicate groups, x once, zero pages per image
    assert acr["saved_bytes_salting2"] == (40 + 1 + 99 + 2 + 29) * PAGE
    assert (acr["cross_source_pages"], acr["cross_pages_shared"]) == (405, 201)


def expected_classes(pages: list[bytes], name: str) -> np.ndarray:
    if name == "lz4":
        sizes = [len(lz4.block.compress(p, store_size=False)) for p in pages]
    else:
        c = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=False, write_checksum=False)
        sizes = [len(c.compress(p)) for p in pages]
    s = np.array(sizes)
    return np.array([(s <= 1024).sum(), ((s > 1024) & (s <= 2048)).sum(), ((s > 2048) & (s <= 3072)).sum(),
                     (s > 3072).sum()])


def test_full_compressibility_matches_the_compressors(images):
    r = profile([images["a"]])
    nonzero = [p for p in images["pages_a"] if p != bytes(PAGE)]
    for name in ("lz4", "zstd"):
        k = expected_classes(nonzero, name)
        c = r["sources"][0]["compress"][name]
        assert c["sampled"] == len(nonzero) == 952
        got = [c["classes"][n] for n in ("le_1k", "le_2k", "le_3k", "worse")]
        assert got == pytest.approx(k / len(nonzero), abs=1e-12)
        # a full sample is exact: the interval is the point
        assert c["classes_interval"]["le_2k"] == [c["classes"]["le_2k"]] * 2
        # random pages (300 unique + 10 dup contents + 200 cross + x) do not compress
        assert k[3] >= 300 + 50 + 200 + 2
    # text pages compress: at least some real file pages land at <= 2 KiB
    assert r["sources"][0]["compress"]["zstd"]["cumulative"]["le_2k"] > 0.05


@pytest.mark.slow
def test_sampled_compressibility_within_its_interval(tmp_path):
    """Each stated interval is a 95 % interval: over 40 seeds every one of them must cover the exact
    value (from the full run) in most runs; a too-narrow interval (say half as wide, ~68 %) fails."""
    files = real_file_pages(6000, skip=500)
    rng = np.random.default_rng(3)
    pages = files + rand_pages(rng, 2000)
    rng.shuffle(pages)
    img = tmp_path / "big.img"
    img.write_bytes(b"".join(pages))
    full = profile([img])["across"]["compress"]
    runs = [profile([img], sample=0.1, seed=seed)["across"]["compress"] for seed in range(40)]
    for name in ("lz4", "zstd"):
        f = full[name]
        for kind, ci in (("classes", "classes_interval"), ("cumulative", "cumulative_interval")):
            for cls in f[kind]:
                covered = [r[name][ci][cls][0] <= f[kind][cls] <= r[name][ci][cls][1] for r in runs]
                assert sum(covered) >= 32, (name, cls, sum(covered))
                # the Wilson half width for n ~ 800 is at most ~3.5 percentage points
                assert max(r[name][ci][cls][1] - r[name][ci][cls][0] for r in runs) < 0.075
        covered = sum(r[name]["ratio_interval"][0] <= f["ratio"] <= r[name]["ratio_interval"][1]
                      for r in runs)
        assert covered >= 32
        for r in runs:
            assert r[name]["sampled"] == pytest.approx(800, abs=4 * np.sqrt(8000 * 0.1 * 0.9))
    # same seed, same sample
    again = profile([img], sample=0.1, seed=11)["across"]["compress"]
    assert again["lz4"]["classes"] == runs[11]["lz4"]["classes"]


@pytest.mark.slow
def test_profile_toml_loads_into_a_scenario_and_simulates(images, tmp_path):
    r = profile([images["a"], images["b"]])
    doc = profile_document(r)
    write_profile(tmp_path / "db1.toml", doc)
    wl = tomllib.loads((tmp_path / "db1.toml").read_text())["workload"]
    # content shares follow from the construction: 1535 pages
    assert wl["content"]["zero"] == pytest.approx(130 / 1535, abs=1e-6)
    assert wl["content"]["template"] == pytest.approx(405 / 1535, abs=1e-6)
    assert wl["content"]["duplicate"] == pytest.approx(50 / 1535, abs=1e-6)
    assert wl["duplicate_copies"] == 5
    assert wl["allocated"] == pytest.approx(1 - 130 / 1535, abs=1e-6)
    assert sum(wl["compressibility"].values()) == pytest.approx(1.0, abs=1e-9)
    (tmp_path / "s.toml").write_text("""
name = "prof"
duration = "2m"
tick = "5s"
[host]
memory = "4 GiB"
page_scale = 16
[workloads.db]
profile = "db1.toml"
wss = 0.3
[[vm]]
name = "db"
count = 2
memory = "1 GiB"
workload = "db"
image = "linux-db"
""")
    sc = load_scenario(str(tmp_path / "s.toml"))
    spec = sc.vms[0].workload
    assert spec.content == pytest.approx((130 / 1535, 405 / 1535, 50 / 1535, 950 / 1535), abs=1e-6)
    assert spec.wss == 0.3  # the field next to `profile` wins
    assert spec.profile == str(tmp_path / "db1.toml")
    host = build_host(sc)
    n = int(host.vm_pages[0])
    zero = np.count_nonzero(host.pages.content[host.vm_slice(0)] == 0)
    assert zero == int(np.floor(spec.content[0] * n))
    result = simulate(sc)
    assert [v["name"] for v in result["vms"]] == ["db-01", "db-02"]
    assert result["duration"] == pytest.approx(120.0)
    assert all(v["powered"] for v in result["vms"])


def run(args):
    return CliRunner().invoke(main_group, args)


def test_cli_writes_profile_and_reports(images, tmp_path):
    out = tmp_path / "p.toml"
    res = run(["profile", "--image", str(images["a"]), "--image", str(images["b"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "pages_shared 212, pages_sharing 373" in res.output
    prof = tomllib.loads(out.read_text())["profile"]
    assert prof["sources"] == ["a.img", "b.img"] and prof["pages"] == 1535
    assert prof["source"]["a.img"]["shareable"] == 202


@pytest.mark.parametrize(
    "args, message",
    [
        (["profile"], "give at least one --pid or --image"),
        (["profile", "--image", "/nonexistent.img"], "/nonexistent.img: cannot read image: No such file"),
        (["profile", "--image", "/tmp"], "/tmp: cannot read image: is a directory"),
        (["profile", "--image", "/dev/null", "--sample", "0"], "--sample: must be within (0, 1]"),
        (["profile", "--image", "/dev/null", "--wss", "1s"], "--wss: a working set can only be measured"),
        (["profile", "--pid", "999999999"], "pid 999999999: no such process"),
    ],
)
def test_user_errors_are_one_line(args, message):
    res = run(args)
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and message in res.output, res.output
