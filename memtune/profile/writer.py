"""The profile file: a ``[workload]`` table a scenario can reference, plus ``[profile]`` provenance.

The ``[workload]`` keys are those of a scenario workload table (see ``memtune/core/scenario.py``):
``content`` (zero / template / duplicate / unique shares of all pages), ``duplicate_copies``,
``compressibility`` (size-class shares of the non-zero pages: the model draws a class for every
page with these shares and then puts zero pages in ``le_1k``, see ``Host._fill_content``),
``allocated`` and, when measured, ``wss`` (fractions of configured memory, which for a profile is the
profiled memory). ``[profile]`` says where the numbers come from and how sure they are.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import tomli_w

from memtune import __version__
from memtune.errors import UserError
from memtune.profile.analysis import CLASS_NAMES

_DIGITS = 6


def _shares(values: list[float]) -> list[float]:
    """Round to 6 digits so the shares still add up to 1 (the last one takes the remainder)."""
    head = [round(float(v), _DIGITS) for v in values[:-1]]
    last = round(1.0 - sum(head), _DIGITS)
    if last < 0:                      # only possible through rounding; give it back to the largest
        j = max(range(len(head)), key=lambda i: head[i])
        head[j] = round(head[j] + last, _DIGITS)
        last = 0.0
    return head + [last]


def workload_table(result: dict[str, Any], *, compressor: str = "lz4",
                   wss: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The ``[workload]`` table for a profile result, and notes on what it could not measure."""
    notes: list[str] = []
    srcs = result["sources"]
    pages = sum(s["pages"] for s in srcs)
    if pages == 0:
        raise UserError("no pages were read from any source")
    zero = sum(s["zero"] for s in srcs)
    template = sum(s["shareable"] for s in srcs)
    dup = sum(s["duplicate"] for s in srcs)
    groups = sum(s["duplicate_groups"] for s in srcs)
    z, t, d, u = _shares([zero / pages, template / pages, dup / pages, (pages - zero - template - dup) / pages])
    wl: dict[str, Any] = {"content": {"zero": z, "template": t, "duplicate": d, "unique": u}}
    if groups:
        wl["duplicate_copies"] = max(2, int(round(dup / groups)))
    comp = result["across"]["compress"].get(compressor, {})
    if comp.get("sampled"):
        cls = comp["classes"]
        vals = _shares([cls[c] for c in CLASS_NAMES])
        wl["compressibility"] = dict(zip(CLASS_NAMES, vals, strict=True))
    else:
        notes.append("compressibility not measured (no non-zero page sampled); the scenario default applies")
    kinds = {s["kind"] for s in srcs}
    if kinds == {"image"}:
        wl["allocated"] = round(1.0 - zero / pages, _DIGITS)
        notes.append("allocated = share of non-zero pages (guest free memory taken to be zeroed)")
    else:
        wl["allocated"] = 1.0
        notes.append("configured memory = the processes' present pages; allocated = 1")
    if wss:
        touched = sum(w["touched"] for w in wss.values())
        frac = min(touched / (pages * 4096), wl["allocated"])
        wl["wss"] = round(frac, _DIGITS)
    else:
        notes.append("wss not measured: give wss next to profile = ... in the scenario "
                     "(or profile processes with --wss)")
    return wl, notes


def profile_document(result: dict[str, Any], *, compressor: str = "lz4",
                     wss: dict[str, Any] | None = None, created: str | None = None) -> dict[str, Any]:
    """The whole profile as a dict ready for TOML."""
    wl, notes = workload_table(result, compressor=compressor, wss=wss)
    across = result["across"]
    prov: dict[str, Any] = {
        "format": 1,
        "tool": f"memtune profile {__version__}",
        "created": created or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sources": [s["name"] for s in result["sources"]],
        "pages": across["pages"],
        "page_size": result["page_size"],
        "hash": result["hash"],
        "sample_fraction": result["sample_fraction"],
        "seed": result["seed"],
        "confidence": result["confidence"],
        "workload_compressor": compressor,
        "notes": notes,
        "counts": {k: v for k, v in across.items() if k != "compress"},
        "compressibility": _compress_toml(across["compress"]),
        "source": {},
    }
    for s in result["sources"]:
        entry = {k: v for k, v in s.items() if k not in ("compress", "details", "name")}
        entry["details"] = {k: v for k, v in s["details"].items() if v is not None}
        entry["compressibility"] = _compress_toml(s["compress"])
        if wss and s["name"] in wss:
            entry["wss"] = wss[s["name"]]
        prov["source"][s["name"]] = entry
    return {"workload": wl, "profile": prov}


def _compress_toml(comp: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, c in comp.items():
        if not c.get("sampled"):
            out[name] = {"sampled": c.get("sampled", 0)}
            continue
        out[name] = {
            "sampled": c["sampled"], "nonzero_pages": c["nonzero_pages"],
            "classes": c["classes"],
            "classes_low": {k: v[0] for k, v in c["classes_interval"].items()},
            "classes_high": {k: v[1] for k, v in c["classes_interval"].items()},
            "cumulative": c["cumulative"],
            "cumulative_low": {k: v[0] for k, v in c["cumulative_interval"].items()},
            "cumulative_high": {k: v[1] for k, v in c["cumulative_interval"].items()},
            "kept_by_esx": c["kept_by_esx"],
            "ratio": c["ratio"], "ratio_low": c["ratio_interval"][0], "ratio_high": c["ratio_interval"][1],
            "all_pages": {k: v["share"] for k, v in c["all_pages"].items()},
        }
    return out


def write_profile(path: str | Path, document: dict[str, Any]) -> None:
    """Write the profile TOML (with a short header comment)."""
    header = ("# memtune workload profile: reference it from a scenario workload table with\n"
              f"#   profile = \"{Path(path).name}\"\n"
              "# fields given next to `profile` override the measured ones.\n")
    text = header + tomli_w.dumps(document)
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write profile: {exc.strerror}", source=str(path)) from None
