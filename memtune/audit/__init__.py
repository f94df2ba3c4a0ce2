"""The tamper-evident audit log format, shared by the audit plugin and ``memtune audit``.

A log is JSON lines, one record per line, keys sorted, no spaces (:func:`canonical`). Every record
has ``seq`` (0, 1, 2 ... across the whole file), ``time`` (simulated seconds), ``kind``, ``vm`` (a
name or null), ``data``, ``prev`` (hex SHA-256 of the previous line's bytes; 64 zeros for the first
record) and ``hash``: SHA-256, or HMAC-SHA-256 when the log is keyed, over the canonical JSON of
the record without ``hash``. A run opens with a ``log-start`` record (which says whether the log is
HMAC'd, never the key) and closes with a ``log-end`` record (how many records the run wrote), so
cutting whole records off the end is seen too. A later run appends to the same chain.

Modules: :mod:`.chain` (canonical form, hashing, keys), :mod:`.writer` (append with fsync),
:mod:`.verify` (find the first broken record), :mod:`.reader` (parse and filter for ``show``).
"""

from memtune.audit.chain import FORMAT, GENESIS, canonical, load_key, record_hash
from memtune.audit.reader import AuditRecord, filter_records, read_records
from memtune.audit.verify import Verdict, verify_bytes, verify_file
from memtune.audit.writer import AuditWriter

__all__ = [
    "FORMAT", "GENESIS", "canonical", "load_key", "record_hash",
    "AuditRecord", "filter_records", "read_records",
    "Verdict", "verify_bytes", "verify_file",
    "AuditWriter",
]
