"""The network layer of the hosted-API client: a request ends at its deadline, or at once on a cancel.

httpx2 / httpcore2 timeouts are per operation: a read that gets one byte a
second never times out, so a server that trickles holds a request forever.
``DeadlineBackend`` wraps httpcore2's sync network backend so that every
connect, TLS handshake, read and write waits at most until the earlier of its
own timeout and the request's deadline (``cancel.request_deadline``), in
slices of ``cancel.POLL`` seconds between which it looks at ``cancel.CANCEL``
(then it raises ``RequestsCancelled``). Running out of time raises
httpcore2's own timeout errors, which the ``openai`` client reports as a
timeout like any other.

Connects and TLS handshakes block inside C (DNS, ``connect()``, the
handshake), where no slice can be cut: they run in a short-lived daemon
thread that the waiting thread walks away from on a cancel or at the
deadline; a connection that is made after that is closed.

``http_client`` is the ``httpx2.Client`` to hand the ``openai`` client; its
direct and proxy transports (``HTTPS_PROXY`` and friends still apply) all
move bytes through ``DeadlineBackend``.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpcore2
import httpx2

from dalle_data.llm.cancel import CANCEL, POLL, RequestsCancelled, check_cancel, end_of, left_until, wait

SocketOption = Any  # httpcore2's SOCKET_OPTION: a tuple for setsockopt


def _next_wait(end: float | None, error: type[Exception]) -> float:
    """How long the next slice may block; raises ``error`` when ``end`` has passed."""
    if end is None:
        return POLL
    left = end - time.monotonic()
    if left <= 0:
        raise error("the request ran out of time (--timeout)")
    return min(POLL, left)


class DeadlineStream(httpcore2.NetworkStream):
    """A connection whose reads and writes stop at the deadline and on a cancel."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner
        self._socket = _sendable_socket(inner)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        end = end_of(timeout)
        while True:
            check_cancel()
            slice_ = _next_wait(end, httpcore2.ReadTimeout)  # raises when the time is up
            try:
                return self._inner.read(max_bytes, slice_)
            except httpcore2.ReadTimeout:
                continue  # a slice without data: look at the cancel and the deadline again

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        end = end_of(timeout)
        sock = self._socket
        if sock is None:  # TLS inside TLS (an https proxy): one write bounded by the deadline, not sliced
            check_cancel()
            _next_wait(end, httpcore2.WriteTimeout)
            self._inner.write(buffer, left_until(end))
            return
        view = memoryview(buffer)
        while view:
            check_cancel()
            slice_ = _next_wait(end, httpcore2.WriteTimeout)
            try:
                sock.settimeout(slice_)
                view = view[sock.send(view):]
            except TimeoutError:
                continue  # nothing could be sent in this slice
            except OSError as err:
                raise httpcore2.WriteError(err) from err

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None,
    ) -> httpcore2.NetworkStream:
        inner = self._inner
        return DeadlineStream(_off_thread(lambda t: inner.start_tls(ssl_context, server_hostname, t),
                                          end_of(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _sendable_socket(stream: httpcore2.NetworkStream) -> socket.socket | None:
    """The socket to send on directly: plain TCP or an ``SSLSocket`` (not TLS layered in Python)."""
    sock = stream.get_extra_info("socket")
    if not isinstance(sock, socket.socket):
        return None
    if stream.get_extra_info("ssl_object") is not None and not isinstance(sock, ssl.SSLSocket):
        return None
    return sock


class DeadlineBackend(httpcore2.NetworkBackend):
    """httpcore2's sync backend, with connects that stop at the deadline and on a cancel."""

    def __init__(self, inner: httpcore2.NetworkBackend | None = None) -> None:
        self._inner = inner if inner is not None else httpcore2.SyncBackend()

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore2.NetworkStream:
        inner = self._inner
        return DeadlineStream(_off_thread(
            lambda t: inner.connect_tcp(host, port, t, local_address, socket_options), end_of(timeout)))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore2.NetworkStream:
        inner = self._inner
        return DeadlineStream(_off_thread(lambda t: inner.connect_unix_socket(path, t, socket_options),
                                          end_of(timeout)))

    def sleep(self, seconds: float) -> None:
        wait(seconds)


def _off_thread(work: Callable[[float | None], httpcore2.NetworkStream], end: float | None) -> httpcore2.NetworkStream:
    """``work(timeout)`` in a helper thread; the caller stops waiting on a cancel or at ``end``."""
    check_cancel()
    left = left_until(end)
    if left == 0:
        raise httpcore2.ConnectTimeout("the request ran out of time (--timeout)")
    return _Blocking(lambda: work(left)).result(end)


class _Blocking:
    """One blocking call in a daemon thread that the caller may walk away from."""

    def __init__(self, work: Callable[[], httpcore2.NetworkStream]) -> None:
        self._work = work
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._left = False
        self._value: httpcore2.NetworkStream | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="dalle-data-connect", daemon=True).start()

    def _run(self) -> None:
        try:
            self._value = self._work()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            self._error = err
        with self._lock:
            self._done.set()
            late = self._left
        if late and self._value is not None:
            self._value.close()  # nobody waits for this connection any more

    def result(self, end: float | None) -> httpcore2.NetworkStream:
        while not self._done.wait(POLL if end is None else max(min(POLL, end - time.monotonic()), 0.0)):
            cancelled = CANCEL.is_set()
            if cancelled or (end is not None and time.monotonic() >= end):
                with self._lock:
                    if self._done.is_set():
                        break
                    self._left = True
                if cancelled:
                    raise RequestsCancelled()
                raise httpcore2.ConnectTimeout("the request ran out of time (--timeout)")
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class _DeadlineClient(httpx2.Client):
    """An ``httpx2.Client`` whose transports, direct and proxy, use ``DeadlineBackend``."""

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.BaseTransport:
        return _with_deadlines(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.BaseTransport:
        return _with_deadlines(super()._init_proxy_transport(*args, **kwargs))


def _with_deadlines(transport: httpx2.BaseTransport) -> httpx2.BaseTransport:
    # httpx2.HTTPTransport takes no network backend; its connection pool does (pinned httpx2 2.16).
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore2.NetworkBackend):
        raise RuntimeError(f"cannot bound request times with httpx2 {httpx2.__version__}: "
                           "its transport no longer has a connection pool with a network backend")
    if not isinstance(backend, DeadlineBackend):
        pool._network_backend = DeadlineBackend(backend)  # type: ignore[union-attr]
    return transport


def http_client(timeout: float) -> httpx2.Client:
    """The HTTP client for ``openai.OpenAI(http_client=...)``: the SDK's defaults, deadline-aware I/O."""
    import openai

    return _DeadlineClient(timeout=timeout, limits=openai.DEFAULT_CONNECTION_LIMITS, follow_redirects=True)
