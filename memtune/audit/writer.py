"""Append records to a log, continuing its chain, with ``fsync`` per batch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from memtune.audit.chain import FORMAT, canonical, jsonable, line_digest, record_hash
from memtune.audit.verify import verify_bytes
from memtune.errors import UserError
from memtune.inputs import check_regular

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class AuditWriter:
    """One run's writer: ``log-start`` on open, ``add`` per record, ``commit`` per batch, ``close``.

    An existing log is verified first (with the same key) and the run continues its chain (``seq``
    and ``prev``); a broken log, a keyed log without the key (or the reverse), or a log another run
    is writing (an exclusive ``flock``) is refused with a :class:`UserError`.
    """

    def __init__(self, path: str | os.PathLike[str], key: bytes | None, *, field: str = "audit.log") -> None:
        self.path = Path(path)
        self.key = key
        self.field = field
        src = str(self.path)
        check_regular(self.path, "the audit log", field=field)
        try:
            self.fh: BinaryIO = open(self.path, "ab+")  # noqa: SIM115 - held open for the run
        except OSError as exc:
            raise UserError(
                f"cannot open the audit log: {exc.strerror or exc}", source=src, field=field
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.fh.close()
                raise UserError(
                    "the audit log is being written by another run", source=src, field=field
                ) from None
        self.fh.seek(0)
        existing = self.fh.read()
        self.seq = 0
        self.prev = "0" * 64
        if existing:
            self._continue(existing)
        self.pending: list[bytes] = []
        self.run_records = 0
        self.closed = False

    def _continue(self, existing: bytes) -> None:
        src = str(self.path)
        try:
            verdict = verify_bytes(existing, self.key, source=src)
        except UserError:
            self.fh.close()
            raise UserError(
                "the existing audit log is HMAC-signed: set audit.key_file or MEMTUNE_AUDIT_KEY "
                "to append to it",
                source=src,
                field=self.field,
            ) from None
        if not verdict.ok:
            self.fh.close()
            raise UserError(
                f"line {verdict.line}: the existing audit log is broken ({verdict.what}: "
                f"{verdict.detail}); refusing to append",
                source=src,
                field=self.field,
            )
        self.seq = verdict.last_seq + 1
        self.prev = verdict.last_digest

    @property
    def keyed(self) -> bool:
        return self.key is not None

    def add(self, time: float, kind: str, vm: str | None, data: dict[str, Any]) -> None:
        """Queue one record; it reaches the file at the next :meth:`commit`."""
        body = {
            "seq": self.seq,
            "time": float(time),
            "kind": str(kind),
            "vm": vm,
            "data": jsonable(data),
            "prev": self.prev,
        }
        body["hash"] = record_hash(body, self.key)
        line = canonical(body).encode("ascii")
        self.pending.append(line)
        self.prev = line_digest(line)
        self.seq += 1
        self.run_records += 1

    def start(self, time: float, data: dict[str, Any]) -> None:
        """The run's ``log-start`` record: format and whether the log is HMAC'd (never the key)."""
        self.add(
            time,
            "log-start",
            None,
            {
                "format": FORMAT,
                "hmac": self.keyed,
                "algorithm": "hmac-sha256" if self.keyed else "sha256",
                **data,
            },
        )

    def commit(self) -> None:
        """Write queued records, flush and fsync (call at most once per tick)."""
        if not self.pending:
            return
        self.fh.seek(0, os.SEEK_END)
        self.fh.write(b"".join(ln + b"\n" for ln in self.pending))
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.pending.clear()

    def close(self, time: float, data: dict[str, Any] | None = None) -> None:
        """The run's ``log-end`` record (counting every record of the run, itself included), then
        commit and close."""
        if self.closed:
            return
        self.add(time, "log-end", None, {"records": self.run_records + 1, **(data or {})})
        self.commit()
        self.fh.close()
        self.closed = True
