"""Check a log's chain and find the first broken record.

What can be told apart (``Verdict.what``):

- ``truncated``: the file is empty, its last line has no newline (a partial write or a cut inside a
  line), or the last run has no ``log-end`` record (whole records cut off the end, or a run that was
  killed);
- ``bad JSON``: a line is not a JSON object with the record fields;
- ``edited``: a record's hash does not match its content, the line is not in canonical form, or its
  ``prev`` does not match the line before it (that line was replaced);
- ``dropped``: ``seq`` jumps and the missing numbers appear nowhere in the file;
- ``reordered``: ``seq`` is out of order and the expected record appears elsewhere in the file;
- ``wrong key``: no record from the first failing one on matches the HMAC key given (two or more);
- ``not keyed``: a key was given but the log is a plain SHA-256 chain.

Without a key anyone can rewrite a whole plain chain consistently, and cutting a log exactly after an
earlier run's ``log-end`` leaves a valid shorter log: compare the record count / last hash the
summary prints with one kept elsewhere when that matters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memtune.audit.chain import FIELDS, GENESIS, canonical, line_digest, record_hash
from memtune.errors import UserError


@dataclass
class Verdict:
    """The result of checking a log: intact, or where and how it first breaks."""

    ok: bool
    records: int = 0                  # records checked and found intact
    runs: int = 0                     # log-start records seen
    keyed: bool | None = None         # HMAC'd (None: no record to tell)
    line: int | None = None           # first broken line (1-based)
    seq: int | None = None            # its seq when it could be read
    what: str = ""                    # truncated, bad JSON, edited, dropped, reordered, wrong key, not keyed
    detail: str = ""
    last_seq: int = -1
    last_digest: str = GENESIS        # SHA-256 of the last intact line (the next record's prev)

    def summary(self, source: str = "log") -> str:
        """One line for ``memtune audit verify``."""
        if self.ok:
            chain = "HMAC-SHA-256" if self.keyed else "SHA-256"
            return (
                f"{source}: intact: {self.records} records in {self.runs} run(s), seq 0..{self.last_seq}, "
                f"{chain} chain, last line digest {self.last_digest[:16]}"
            )
        seq = "?" if self.seq is None else str(self.seq)
        return f"{source}: line {self.line} (seq {seq}): {self.what}: {self.detail}"

    def proves(self) -> str:
        """What an intact verdict is evidence of, and what it is not (printed after the summary)."""
        if self.keyed:
            return (
                "what this proves: every record was written by a holder of the HMAC key and not changed, "
                "dropped or reordered since; it cannot show records cut off after an earlier run's log-end "
                "(compare the record count and last digest with a copy kept elsewhere), nor anything done by "
                "someone who can read the key"
            )
        return (
            "what this proves: no record was changed, dropped or reordered without re-hashing the chain "
            "after "
            "it (accidents, careless edits); it does NOT prove the log is authentic: without a key anyone "
            "who "
            "can write the file can rewrite it and re-hash every record, and the result verifies as intact. "
            "For evidence, run with an HMAC key kept off the audited host (setting audit.key_file or "
            "$MEMTUNE_AUDIT_KEY) or keep the last digest above somewhere this host cannot write; see "
            "docs/audit.md"
        )


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or set(rec) != set(FIELDS):
        return None
    if (
        type(rec["seq"]) is not int
        or not isinstance(rec["kind"], str)
        or not isinstance(rec["data"], dict)
        or not isinstance(rec["prev"], str)
        or not isinstance(rec["hash"], str)
        or not (rec["vm"] is None or isinstance(rec["vm"], str))
        or isinstance(rec["time"], bool)
        or not isinstance(rec["time"], int | float)
    ):
        return None
    return rec


def _hash_ok(rec: dict[str, Any], line: bytes, key: bytes | None) -> bool:
    body = {k: v for k, v in rec.items() if k != "hash"}
    try:
        return rec["hash"] == record_hash(body, key) and canonical(rec).encode("ascii") == line
    except (ValueError, UnicodeEncodeError):
        return False


def verify_bytes(data: bytes, key: bytes | None = None, *, source: str = "log") -> Verdict:
    """Check every record of a log held in ``data``; the first problem ends the check.

    Raises :class:`UserError` when the log is HMAC'd and no key was given (a usage problem,
    not a finding about the log).
    """
    if not data:
        return Verdict(False, line=1, what="truncated", detail="the log is empty (no log-start record)")
    complete = data.endswith(b"\n")
    lines = data.split(b"\n")
    if complete:
        lines.pop()
    parsed = [_parse(ln) for ln in lines]
    seqs = {r["seq"] for r in parsed if r is not None}
    v = Verdict(True)
    prev = GENESIS
    open_run: int | None = None  # line of the open run's log-start
    run_records = 0

    def broken(i: int, what: str, detail: str, seq: int | None = None) -> Verdict:
        v.ok, v.line, v.what, v.detail, v.seq = False, i, what, detail, seq
        return v

    for i, (line, rec) in enumerate(zip(lines, parsed, strict=True), start=1):
        seq = rec["seq"] if rec is not None else None
        if i == len(lines) and not complete:
            return broken(i, "truncated", "the last line is partial (no newline at the end of the file)", seq)
        if rec is None:
            return broken(i, "bad JSON", "the line is not a JSON object with the audit record fields")
        if v.keyed is None:
            if rec["kind"] != "log-start" or not isinstance(rec["data"].get("hmac"), bool):
                if rec["seq"] != 0 and 0 not in seqs:
                    return broken(i, "dropped", "the log-start record (seq 0) is missing", seq)
                if rec["seq"] != 0:
                    return broken(i, "reordered", "the log-start record (seq 0) is not the first line", seq)
                return broken(i, "edited", "the first record is not a log-start record", seq)
            keyed = rec["data"]["hmac"]
            if keyed and key is None:
                # a plain chain whose log-start was edited to claim a key, or a keyed log
                nxt = parsed[i] if i < len(parsed) else None
                if nxt is not None and _hash_ok(nxt, lines[i], None):
                    return broken(
                        i, "edited", "the log-start claims an HMAC key but the chain is plain SHA-256", seq
                    )
                raise UserError(
                    "the audit log is HMAC-signed: give --key-file or set MEMTUNE_AUDIT_KEY", source=source
                )
            if not keyed and key is not None:
                return broken(
                    i,
                    "not keyed",
                    "a key was given but the log is a plain SHA-256 chain "
                    "(it may have been rewritten without the key)",
                    seq,
                )
            v.keyed = keyed
        use_key = key if v.keyed else None
        if not _hash_ok(rec, line, use_key):
            if v.keyed and len(lines) - i >= 1:
                rest = [
                    _hash_ok(r, ln, use_key)
                    for ln, r in zip(lines[i - 1 :], parsed[i - 1 :], strict=True)
                    if r is not None
                ]
                if len(rest) >= 2 and not any(rest):
                    return broken(i, "wrong key", "no record from here on matches the HMAC key", seq)
            return broken(i, "edited", "the hash does not match the record's content", seq)
        expect = i - 1  # every intact line before this one has one seq
        if seq != expect:
            if seq > expect and expect not in seqs:
                return broken(i, "dropped", f"records seq {expect}..{seq - 1} are missing", seq)
            return broken(i, "reordered", f"expected seq {expect} here", seq)
        if rec["prev"] != prev:
            return broken(i, "edited", f"prev does not match line {i - 1}: that line was changed", seq)
        kind = rec["kind"]
        if kind == "log-start":
            if open_run is not None:
                return broken(
                    i,
                    "truncated",
                    f"the run that started on line {open_run} has no log-end record before this log-start",
                    seq,
                )
            if bool(rec["data"].get("hmac")) != v.keyed:
                return broken(i, "edited", "a later run changed whether the log is HMAC'd", seq)
            open_run, run_records = i, 0
            v.runs += 1
        elif open_run is None:
            return broken(
                i, "edited", f"a {kind!r} record outside a run (after log-end, before log-start)", seq
            )
        run_records += 1
        if kind == "log-end":
            if rec["data"].get("records") != run_records:
                return broken(
                    i,
                    "edited",
                    f"log-end counts {rec['data'].get('records')} records, the run has {run_records}",
                    seq,
                )
            open_run = None
        prev = line_digest(line)
        v.records += 1
        v.last_seq = seq
        v.last_digest = prev
    if open_run is not None:
        return broken(
            len(lines) + 1,
            "truncated",
            f"no log-end after seq {v.last_seq} (records cut off the end, or the run was killed)",
        )
    return v


def verify_file(path: str | Path, key: bytes | None = None) -> Verdict:
    """:func:`verify_bytes` on a file; an unreadable file is a :class:`UserError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the audit log: {exc.strerror or exc}", source=str(path)) from None
    return verify_bytes(data, key, source=str(path))
