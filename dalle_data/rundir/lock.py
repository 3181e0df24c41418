"""One process at a time changes a run directory: an OS-level lock.

``RunLock(OUT)`` takes an exclusive ``flock`` on ``OUT/.dalle-data.lock``
and writes who holds it (pid, command, host, start time) into the file. The
kernel drops the lock when the process exits, however it exits (kill -9
included), so a crash never leaves a stale lock behind; the file itself stays
and is reused. A second process that wants the directory fails at once with
one line naming the holder. ``generate``, ``review --apply``, ``verify
--repair`` (and the commands to come that rewrite a run) hold it for their
whole run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from dalle_data.errors import DalleDataError
from dalle_data.rundir.layout import LOCK_FILE


class RunLocked(DalleDataError):
    """Another process holds the run directory."""

    exit_code = 75  # EX_TEMPFAIL: try again when the other process is done


class RunLock:
    """An exclusive lock on a run directory (a context manager)."""

    def __init__(self, out: Path, what: str = "") -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self.what = what or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 0.0) -> RunLock:
        """Take the lock; if another process holds it, retry for up to ``wait`` seconds, then ``RunLocked``."""
        import fcntl

        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise DalleDataError(f"cannot lock {self.out}: {err.strerror or err}; check its permissions") from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                raise RunLocked(f"{self.out} is in use by {describe_holder(self.path)}; wait for it to finish "
                                "or use another --out") from None
            except OSError as err:
                os.close(fd)
                raise DalleDataError(f"cannot lock {self.out}: {err.strerror or err}") from None
        info = {"pid": os.getpid(), "command": self.what[:500], "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def describe_holder(path: Path) -> str:
    """``pid 123 (dalle-data generate ...)`` from a lock file (retried briefly: the holder writes it just after locking)."""
    for _ in range(20):
        try:
            info = json.loads(path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict) and "pid" in info:
            host = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
            return f"pid {info['pid']}{host} ({info.get('command', '?')}, since {info.get('since', '?')})"
        time.sleep(0.05)
    return "another process"
