"""Canonical record form, the hash chain and HMAC keys."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from typing import Any

from memtune.errors import UserError
from memtune.inputs import read_bytes

FORMAT = "memtune-audit/1"
GENESIS = "0" * 64
KEY_ENV = "MEMTUNE_AUDIT_KEY"
FIELDS = ("data", "hash", "kind", "prev", "seq", "time", "vm")


def canonical(obj: Any) -> str:
    """The one byte form of a record (or its body): sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def record_hash(body: dict[str, Any], key: bytes | None) -> str:
    """SHA-256 (HMAC-SHA-256 with ``key``) over the canonical JSON of a record without ``hash``."""
    text = canonical(body).encode("ascii")
    if key is None:
        return hashlib.sha256(text).hexdigest()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def line_digest(line: bytes) -> str:
    """What the next record's ``prev`` holds: hex SHA-256 of this line's bytes (no newline)."""
    return hashlib.sha256(line).hexdigest()


def jsonable(value: Any) -> Any:
    """Event data as plain JSON: numpy scalars and arrays to numbers and lists, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    tolist = getattr(value, "tolist", None)
    if tolist is not None:          # numpy scalar or array
        return jsonable(tolist())
    return str(value)


MAX_KEY_BYTES = 1 << 20  # an HMAC key is bytes to a few KiB; a larger "key file" is a mistake


def load_key(key_file: str | os.PathLike[str] | None, *, env: bool = True,
             field: str = "audit.key_file") -> bytes | None:
    """The HMAC key: the bytes of ``key_file`` (surrounding whitespace stripped), else the
    environment variable ``MEMTUNE_AUDIT_KEY`` (UTF-8), else None (a plain SHA-256 chain)."""
    if key_file:
        raw = read_bytes(key_file, "the audit key file", field=field, limit=MAX_KEY_BYTES).strip()
        if not raw:
            raise UserError("the audit key file is empty", source=str(key_file), field=field)
        return raw
    if env:
        value = os.environ.get(KEY_ENV)
        if value:
            return value.encode("utf-8")
    return None
