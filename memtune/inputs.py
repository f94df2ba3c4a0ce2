"""Reading a file a user names: a regular file, read whole, of bounded size.

A character device or FIFO named where a file is expected never ends (``/dev/zero``, ``/dev/full``
read as zeros forever) and a read of it grows until the OOM killer ends the process; a file far larger
than any scenario, policy, journal or audit log is a mistake too. Both are refused with one line
naming the file, before anything is read (``stat``; then at most ``limit`` + 1 bytes are read).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from memtune.errors import UserError

MAX_INPUT_BYTES = 1 << 30   # 1 GiB: well above any journal, audit log or capture memtune reads whole


def check_regular(path: str | os.PathLike[str], what: str, *, field: str | None = None,
                  error: type[UserError] = UserError) -> None:
    """Refuse ``path`` if it exists and is not a regular file (a device, FIFO, socket or folder)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: the caller's open says so in its own words
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a device or pipe, whose read would never end"
        raise error(f"{what} must be a regular file, not {kind}", source=str(path), field=field)


def read_bytes(path: str | os.PathLike[str], what: str, *, field: str | None = None,
               limit: int = MAX_INPUT_BYTES, error: type[UserError] = UserError) -> bytes:
    """The whole of ``path``, a regular file of at most ``limit`` bytes; else one-line ``error``."""
    check_regular(path, what, field=field, error=error)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what}: {exc.strerror or exc}", source=str(path), field=field) from None
    if len(data) > limit:
        raise error(f"{what} is larger than {limit >> 20} MiB", source=str(path), field=field)
    return data


def read_text(path: str | os.PathLike[str], what: str, *, field: str | None = None,
              limit: int = MAX_INPUT_BYTES, error: type[UserError] = UserError) -> str:
    """:func:`read_bytes` decoded as UTF-8; a file that is not text is one line too."""
    data = read_bytes(path, what, field=field, limit=limit, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text (byte {exc.start})", source=str(Path(path)),
                    field=field) from None
