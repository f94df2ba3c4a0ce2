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
from memtune.inputs import read_bytes


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


class _Broken(Exception):
    """The first problem found: what it is (a :class:`Verdict` ``what``) and the detail."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(detail)
        self.what, self.detail = what, detail


@dataclass
class _Lines:
    """A log split into lines, each parsed (None: not a record), and every seq that appears."""

    lines: list[bytes]
    parsed: list[dict[str, Any] | None]
    complete: bool                    # the file ends with a newline
    seqs: set[int]

    @classmethod
    def of(cls, data: bytes) -> _Lines:
        complete = data.endswith(b"\n")
        lines = data.split(b"\n")
        if complete:
            lines.pop()
        parsed = [_parse(ln) for ln in lines]
        return cls(lines, parsed, complete, {r["seq"] for r in parsed if r is not None})


def verify_bytes(data: bytes, key: bytes | None = None, *, source: str = "log") -> Verdict:
    """Check every record of a log held in ``data``; the first problem ends the check.

    Each line is read, its chain kind settled by the first record, then its hash, ``seq``, ``prev``
    and place in a run (log-start ... log-end) are checked in that order.
    Raises :class:`UserError` when the log is HMAC'd and no key was given (a usage problem,
    not a finding about the log).
    """
    if not data:
        return Verdict(False, line=1, what="truncated", detail="the log is empty (no log-start record)")
    log = _Lines.of(data)
    v = Verdict(True)
    runs = _Runs()
    i, seq = 0, None
    try:
        for i, (line, rec) in enumerate(zip(log.lines, log.parsed, strict=True), start=1):
            seq = rec["seq"] if rec is not None else None
            rec = _readable(log, i, rec)
            if v.keyed is None:
                v.keyed = _chain_kind(log, i, rec, key, source)
            _check_hash(log, i, rec, key if v.keyed else None, v.keyed)
            _check_seq(log, i, rec["seq"])
            if rec["prev"] != v.last_digest:
                raise _Broken("edited", f"prev does not match line {i - 1}: that line was changed")
            runs.check(i, rec, v)
            v.last_digest = line_digest(line)
            v.records += 1
            v.last_seq = rec["seq"]
        i, seq = len(log.lines) + 1, None
        runs.check_closed(v.last_seq)
    except _Broken as b:
        v.ok, v.line, v.what, v.detail, v.seq = False, i, b.what, b.detail, seq
    return v


def _readable(log: _Lines, i: int, rec: dict[str, Any] | None) -> dict[str, Any]:
    """Line ``i`` is whole (the last line ends with a newline) and is an audit record."""
    if i == len(log.lines) and not log.complete:
        raise _Broken("truncated", "the last line is partial (no newline at the end of the file)")
    if rec is None:
        raise _Broken("bad JSON", "the line is not a JSON object with the audit record fields")
    return rec


def _chain_kind(log: _Lines, i: int, rec: dict[str, Any], key: bytes | None, source: str) -> bool:
    """Whether the chain is HMAC'd, from the first record (the log-start's ``hmac``), checked
    against the key given."""
    if rec["kind"] != "log-start" or not isinstance(rec["data"].get("hmac"), bool):
        if rec["seq"] != 0 and 0 not in log.seqs:
            raise _Broken("dropped", "the log-start record (seq 0) is missing")
        if rec["seq"] != 0:
            raise _Broken("reordered", "the log-start record (seq 0) is not the first line")
        raise _Broken("edited", "the first record is not a log-start record")
    keyed = rec["data"]["hmac"]
    if keyed and key is None:
        # a plain chain whose log-start was edited to claim a key, or a keyed log
        nxt = log.parsed[i] if i < len(log.parsed) else None
        if nxt is not None and _hash_ok(nxt, log.lines[i], None):
            raise _Broken("edited", "the log-start claims an HMAC key but the chain is plain SHA-256")
        raise UserError(
            "the audit log is HMAC-signed: give --key-file or set MEMTUNE_AUDIT_KEY", source=source
        )
    if not keyed and key is not None:
        raise _Broken(
            "not keyed",
            "a key was given but the log is a plain SHA-256 chain "
            "(it may have been rewritten without the key)",
        )
    return keyed


def _check_hash(log: _Lines, i: int, rec: dict[str, Any], key: bytes | None, keyed: bool) -> None:
    """The record's hash matches its content in canonical form; in a keyed log, a key that matches
    no record from here on (two or more) is the wrong key rather than an edit."""
    if _hash_ok(rec, log.lines[i - 1], key):
        return
    if keyed:
        rest = [
            _hash_ok(r, ln, key)
            for ln, r in zip(log.lines[i - 1 :], log.parsed[i - 1 :], strict=True)
            if r is not None
        ]
        if len(rest) >= 2 and not any(rest):
            raise _Broken("wrong key", "no record from here on matches the HMAC key")
    raise _Broken("edited", "the hash does not match the record's content")


def _check_seq(log: _Lines, i: int, seq: int) -> None:
    """Line ``i`` holds seq ``i - 1``: a missing seq found nowhere is dropped, else reordered."""
    expect = i - 1  # every intact line before this one has one seq
    if seq != expect:
        if seq > expect and expect not in log.seqs:
            raise _Broken("dropped", f"records seq {expect}..{seq - 1} are missing")
        raise _Broken("reordered", f"expected seq {expect} here")


@dataclass
class _Runs:
    """Runs bracket their records: log-start (same chain kind as the first), records, log-end
    counting them."""

    open_run: int | None = None       # line of the open run's log-start
    run_records: int = 0

    def check(self, i: int, rec: dict[str, Any], v: Verdict) -> None:
        kind = rec["kind"]
        if kind == "log-start":
            if self.open_run is not None:
                raise _Broken(
                    "truncated",
                    f"the run that started on line {self.open_run} has no log-end record "
                    "before this log-start",
                )
            if bool(rec["data"].get("hmac")) != v.keyed:
                raise _Broken("edited", "a later run changed whether the log is HMAC'd")
            self.open_run, self.run_records = i, 0
            v.runs += 1
        elif self.open_run is None:
            raise _Broken("edited", f"a {kind!r} record outside a run (after log-end, before log-start)")
        self.run_records += 1
        if kind == "log-end":
            if rec["data"].get("records") != self.run_records:
                counted = rec["data"].get("records")
                raise _Broken("edited", f"log-end counts {counted} records, the run has {self.run_records}")
            self.open_run = None

    def check_closed(self, last_seq: int) -> None:
        """The last run ended with its log-end."""
        if self.open_run is not None:
            raise _Broken(
                "truncated",
                f"no log-end after seq {last_seq} (records cut off the end, or the run was killed)",
            )


def verify_file(path: str | Path, key: bytes | None = None) -> Verdict:
    """:func:`verify_bytes` on a file; an unreadable file is a :class:`UserError`."""
    return verify_bytes(read_bytes(path, "the audit log"), key, source=str(path))
