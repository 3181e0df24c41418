"""Stopping hosted-API requests: a per-request deadline and a process-wide cancel.

* ``CANCEL`` is one ``threading.Event`` for the whole process. While it is set,
  every request in flight stops within ``POLL`` seconds, retry waits wake, and
  no new request starts: each raises ``RequestsCancelled``. A signal handler
  sets it with ``cancel_requests()`` (``cancel_on_signals`` installs one for
  SIGINT and SIGTERM); ``reset_cancel()`` clears it.
* ``request_deadline(seconds)`` bounds the total time of the requests made
  inside it (connect, send, headers, body). The deadline lives in a
  ``ContextVar``: the sync ``openai`` client sends from the calling thread, so
  the network layer (``transport``) sees the deadline of the call it serves.

Standard library only: importing this costs nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from dalle_data.errors import DalleDataError

POLL = 0.25  # seconds between two looks at CANCEL while a request waits on the network
ABORT_POLL = 0.05  # seconds between two looks at a batch's abort event during a retry wait
CANCEL = threading.Event()
_DEADLINE: ContextVar[float | None] = ContextVar("dalle_data_request_deadline", default=None)


class RequestsCancelled(DalleDataError):
    """Requests were cancelled (Ctrl-C, SIGTERM): the command stops without waiting for the server."""

    exit_code = 130

    def __init__(self, message: str = "interrupted; requests in flight were dropped (finished work is kept): "
                                      "rerun the same command to go on") -> None:
        super().__init__(message)


def cancel_requests() -> None:
    """Stop every request in flight and refuse new ones (safe to call from a signal handler)."""
    CANCEL.set()


def reset_cancel() -> None:
    """Let requests run again after ``cancel_requests()``."""
    CANCEL.clear()


def check_cancel() -> None:
    """Raise ``RequestsCancelled`` when requests are cancelled."""
    if CANCEL.is_set():
        raise RequestsCancelled()


def wait(seconds: float, abort: threading.Event | None = None) -> bool:
    """Sleep ``seconds``; wakes at once on ``CANCEL`` (raises ``RequestsCancelled``) and soon on ``abort``
    (returns True)."""
    end = time.monotonic() + max(seconds, 0.0)
    while True:
        if abort is not None and abort.is_set():
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        if CANCEL.wait(min(left, ABORT_POLL) if abort is not None else left):
            raise RequestsCancelled()


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Requests made inside (in this thread or context) end ``seconds`` from now at the latest."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def end_of(timeout: float | None) -> float | None:
    """When an operation with its own ``timeout`` must end: the earlier of that and the request deadline."""
    deadline = _DEADLINE.get()
    own = None if timeout is None else time.monotonic() + timeout
    if deadline is None:
        return own
    return deadline if own is None else min(own, deadline)


def left_until(end: float | None) -> float | None:
    """Seconds left until ``end`` (None: no limit), never below zero."""
    return None if end is None else max(end - time.monotonic(), 0.0)


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM cancel the requests instead of killing the process mid-write.

    Clears an earlier cancel first; restores the previous handlers after. Off
    the main thread (where handlers cannot be installed) it only clears.
    """
    reset_cancel()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        cancel_requests()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
