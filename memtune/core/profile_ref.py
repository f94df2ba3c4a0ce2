"""Workload tables that name a measured profile (``profile = "db1.toml"``).

A profile (written by ``memtune profile``) is TOML with a ``[workload]`` table holding the measured
content mix, compressibility and working set. Fields given next to ``profile`` win over it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from memtune.errors import ConfigError

MAX_PROFILE_BYTES = 16 << 20     # profiles written by `memtune profile` are a few KiB


def workload_from_profile(
    wdata: dict[str, Any], folder: Path | None, source: str, table: str
) -> dict[str, Any]:
    ref = wdata["profile"]
    if not isinstance(ref, str):
        raise ConfigError("expected a file name", source=source, field=f"{table}.profile")
    path = Path(ref)
    if not path.is_absolute() and folder is not None:
        path = folder / path
    try:
        if path.exists() and not path.is_file():  # a device or FIFO (/dev/zero) would never end
            raise ConfigError(
                f"profile {str(path)!r} is not a regular file", source=source, field=f"{table}.profile"
            )
        if path.exists() and path.stat().st_size > MAX_PROFILE_BYTES:
            raise ConfigError(
                f"profile {str(path)!r} is larger than {MAX_PROFILE_BYTES >> 20} MiB: not a profile",
                source=source,
                field=f"{table}.profile",
            )
        prof = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"cannot read profile {str(path)!r}: {exc.strerror}", source=source, field=f"{table}.profile"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"profile {str(path)!r} is not a text file", source=source, field=f"{table}.profile"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"profile {str(path)!r} is not valid TOML: {exc}", source=source, field=f"{table}.profile"
        ) from None
    measured = prof.get("workload")
    if not isinstance(measured, dict):
        raise ConfigError(
            f"profile {str(path)!r} has no [workload] table", source=source, field=f"{table}.profile"
        )
    merged = dict(measured)
    merged.update({k: v for k, v in wdata.items()})
    merged["profile"] = str(path)
    return merged
