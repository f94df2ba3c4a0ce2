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
    z, t, d, u = _shares(
        [zero / pages, template / pages, dup / pages, (pages - zero - template - dup) / pages]
    )
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
        notes.append(
            "wss not measured: give wss next to profile = ... in the scenario "
            "(or profile processes with --wss)"
        )
    return wl, notes


def profile_document(
    result: dict[str, Any],
    *,
    compressor: str = "lz4",
    wss: dict[str, Any] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
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
            "sampled": c["sampled"],
            "nonzero_pages": c["nonzero_pages"],
            "classes": c["classes"],
            "classes_low": {k: v[0] for k, v in c["classes_interval"].items()},
            "classes_high": {k: v[1] for k, v in c["classes_interval"].items()},
            "cumulative": c["cumulative"],
            "cumulative_low": {k: v[0] for k, v in c["cumulative_interval"].items()},
            "cumulative_high": {k: v[1] for k, v in c["cumulative_interval"].items()},
            "kept_by_esx": c["kept_by_esx"],
            "ratio": c["ratio"],
            "ratio_low": c["ratio_interval"][0],
            "ratio_high": c["ratio_interval"][1],
            "all_pages": {k: v["share"] for k, v in c["all_pages"].items()},
        }
    return out


def content_groups(result: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """``[[content_group]]`` tables from the sharing-degree distribution of a multi-source profile.

    With S sources and f_k the share of all pages whose content exactly k of them hold, degree k >= 2
    becomes a group held by each VM with probability k / S and filling f_k * S / k of a member's
    memory, so a host of S such VMs holds f_k of its memory in it on average, and larger hosts share
    it among more members. Shares are scaled down together if a VM holding every group would need
    more than all its memory (then a note says so).
    """
    across = result["across"]
    deg = across.get("sharing_degree", [])
    n_src = len(deg)
    pages = across["pages"]
    notes: list[str] = []
    groups = []
    for k in range(2, n_src + 1):
        f = deg[k - 1] / pages if pages else 0.0
        if f > 0:
            groups.append({"name": f"held-by-{k}-of-{n_src}", "share": f * n_src / k, "members": k / n_src})
    total = sum(g["share"] for g in groups)
    if total > 1.0:
        for g in groups:
            g["share"] /= total
        notes.append(f"group shares scaled by 1/{total:.3f} so a VM holding every group fits in its memory")
    for g in groups:
        g["share"] = round(g["share"], _DIGITS)
        g["members"] = round(g["members"], _DIGITS)
    return groups, notes


def scenario_document(
    result: dict[str, Any], doc: dict[str, Any], *, vms: int, name: str = "profiled"
) -> dict[str, Any]:
    """A scenario of ``vms`` VMs like the profiled sources: their mean size, the measured workload with
    the content other sources hold moved into content groups (``content_groups``)."""
    groups, notes = content_groups(result)
    srcs = result["sources"]
    pages = sum(s["pages"] for s in srcs)
    vm_bytes = max(4096 * int(round(pages / len(srcs))), 1 << 20)
    wl = {k: v for k, v in doc["workload"].items()}
    c = dict(wl["content"])
    held = sum(g["share"] * g["members"] for g in groups)  # expected share of a VM in groups
    rest = max(1.0 - held, 1e-9)
    if groups:
        z, d = min(c["zero"] / rest, 1.0), min(c["duplicate"] / rest, 1.0)
        zz, tt, dd, uu = _shares([z, 0.0, d, max(1.0 - z - d, 0.0)])
        wl["content"] = {"zero": zz, "template": tt, "duplicate": dd, "unique": uu}
    host = max(vms * vm_bytes * 2, 1 << 30)
    return {
        "name": name,
        "description": f"{vms} VMs like the {len(srcs)} profiled sources "
                       f"({', '.join(s['name'] for s in srcs)})",
        "duration": "30m",
        "tick": "5s",
        "host": {"memory": f"{host // (1 << 20)} MiB"},
        "workloads": {"profiled": wl},
        "content_group": groups,
        "vm": [
            {"name": "vm", "count": vms, "memory": f"{vm_bytes // (1 << 10)} KiB", "workload": "profiled"}
        ],
        "_notes": notes,
    }


def write_scenario(path: str | Path, document: dict[str, Any]) -> None:
    notes = document.pop("_notes", [])
    header = (
        "# memtune scenario written by `memtune profile --scenario-out` (sharing-degree distribution\n"
        "# measured across the sources as [[content_group]] tables)\n"
        + "".join(f"# note: {n}\n" for n in notes)
    )
    try:
        Path(path).write_text(header + tomli_w.dumps(document))
    except OSError as exc:
        raise UserError(f"cannot write scenario: {exc.strerror}", source=str(path)) from None


def write_profile(path: str | Path, document: dict[str, Any]) -> None:
    """Write the profile TOML (with a short header comment)."""
    header = (
        "# memtune workload profile: reference it from a scenario workload table with\n"
        f'#   profile = "{Path(path).name}"\n'
        "# fields given next to `profile` override the measured ones.\n"
    )
    text = header + tomli_w.dumps(document)
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write profile: {exc.strerror}", source=str(path)) from None
