"""Safe file I/O: nothing is ever half-written under its final name.

``atomic_open`` / ``atomic_write_bytes`` write to a hidden temporary file in the
same directory (``.tmp-<name>.<pid>.part``; the ``.part`` suffix keeps loaders
from ever picking it up), flush and ``fsync`` it, then ``os.replace`` it onto
the final name. ``remove_temporaries`` sweeps leftovers of a killed run.
Disk errors (``OSError``: disk full, read-only, permission denied) surface as
``OutputDirError`` with one line naming the path and what to do.

This sits in the bottom layer: the run directory, the shard markers and the
writers all write through it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from dalle_data.errors import OutputDirError

logger = logging.getLogger("dalle_data.writers.base")  # the name its messages have always had


def disk_error(path: Path, exc: OSError) -> OutputDirError:
    """A one-line user error for a failed disk operation on ``path``."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free up disk space or choose another --out directory"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "check its permissions or choose another --out directory"
    else:
        advice = "check the disk or choose another --out directory"
    return OutputDirError(f"cannot write {path}: {reason}; {advice}")


def ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(path, exc) from exc


def temp_path(path: Path) -> Path:
    return path.with_name(f".tmp-{path.name}.{os.getpid()}.part")


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[IO[bytes]]:
    """Open a temporary file that replaces ``path`` only if the block succeeds.

    The parent directory must exist. On success the data is flushed, fsynced
    and renamed onto ``path``; on any error the temporary file is removed. An
    ``OSError`` becomes ``OutputDirError``.
    """
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise disk_error(path, exc) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_open(path) as handle:
        handle.write(data)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_line(row: dict[str, Any]) -> bytes:
    """One JSON Lines row; NaN and infinities become null (they are not JSON)."""
    safe = {key: _json_safe(value) for key, value in row.items()}
    return (json.dumps(safe, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write a whole JSON Lines file atomically."""
    ensure_dir(path.parent)
    atomic_write_bytes(path, b"".join(json_line(row) for row in rows))


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one whole line and fsync (for logs that grow across runs)."""
    ensure_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, json_line(row))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise disk_error(path, exc) from exc


def remove_file(path: Path) -> None:
    """Delete ``path`` if it exists; disk errors become ``OutputDirError``."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise disk_error(path, exc) from exc


def remove_temporaries(root: Path) -> int:
    """Delete the ``.tmp-*.part`` files a killed run left under ``root``."""
    removed = 0
    if not root.is_dir():
        return 0
    for path in root.rglob(".tmp-*.part"):
        if path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run", removed)
    return removed


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object read from ``path``; None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
