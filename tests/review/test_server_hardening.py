"""The review server under misbehaving clients: silent, half-sent, reset, or sending absurd JSON."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dalle_data.review.decisions import DecisionBody, DecisionError
from dalle_data.review.selection import SelectionOptions
from dalle_data.review.server import ReviewServer
from dalle_data.review.session import ReviewSession
from tests.review.test_server import request

IDLE = 0.5  # seconds; the real default is much longer


@pytest.fixture()
def server(base_run: Path, tmp_path: Path) -> Iterator[ReviewServer]:
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    srv = ReviewServer(ReviewSession.open(out, SelectionOptions(lowest=3)), port=0, idle_timeout=IDLE)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def handler_threads() -> list[threading.Thread]:
    """The server's per-connection threads (socketserver names them after their target)."""
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def wait_for_handlers(timeout: float) -> bool:
    """True once no connection is being served any more; False if one still is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while handler_threads():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def connect(srv: ReviewServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST (linger 0), as a crashing client or a killed browser tab does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def head(srv: ReviewServer, method: str, path: str, length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}", f"X-Review-Token: {srv.token}"]
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- idle connections ----------------------------------------------------------------

@pytest.mark.parametrize("sent", ["nothing", "half a request line", "half the headers"])
def test_a_silent_client_is_dropped_after_the_idle_timeout(server: ReviewServer, sent: str) -> None:
    assert wait_for_handlers(5)
    sock = connect(server)
    try:
        if sent == "half a request line":
            sock.sendall(b"GET /api/sta")
        elif sent == "half the headers":
            sock.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        data = read_all(sock)  # the server closes the connection: EOF, not the client's 10 s timeout
        assert time.monotonic() - start < 5 * IDLE + 2
        assert data == b"" or data.startswith(b"HTTP/1.")
        assert wait_for_handlers(5), "the connection's thread is still held"
    finally:
        sock.close()


def test_a_body_that_never_arrives_is_a_408_and_the_thread_is_freed(
    server: ReviewServer, caplog: pytest.LogCaptureFixture,
) -> None:
    log_path = server.session.log.path
    sock = connect(server)
    try:
        sock.sendall(head(server, "POST", "/api/decision", length=200) + b'{"id": "')
        answer = read_all(sock)
    finally:
        sock.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.0 408") or status_line.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert wait_for_handlers(5)
    assert not log_path.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_the_idle_timeout_is_a_module_setting(base_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dalle_data.review import server as server_module

    assert 5 <= server_module.IDLE_TIMEOUT <= 300
    monkeypatch.setattr(server_module, "IDLE_TIMEOUT", 0.25)
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    srv = ReviewServer(ReviewSession.open(out, SelectionOptions(lowest=1)), port=0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        assert srv.idle_timeout == 0.25
        sock = connect(srv)
        start = time.monotonic()
        assert read_all(sock) == b"" and time.monotonic() - start < 3
        sock.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_other_clients_are_served_while_one_is_silent(server: ReviewServer) -> None:
    silent = connect(server)
    try:
        status, body, _ = request(server, "GET", "/api/state")
        assert status == 200 and json.loads(body)["progress"]["total"] == 3
    finally:
        silent.close()


# -- absurd JSON ---------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"[" * 2000 + b"]" * 2000,
    b"[" * 4000,
    b'{"id": ' + b"[" * 1500 + b"]" * 1500 + b', "action": "accept"}',
    b'{"":' * 800 + b"1" + b"}" * 800,
])
def test_deeply_nested_json_is_a_400_with_one_line(
    server: ReviewServer, caplog: pytest.LogCaptureFixture, body: bytes,
) -> None:
    assert len(body) <= 4096
    status, answer, headers = request(server, "POST", "/api/decision", body=body)
    assert status == 400, answer
    assert headers["Content-Type"].startswith("application/json")
    message = json.loads(answer)["error"]
    assert message and "\n" not in message and "Traceback" not in message
    assert not server.session.log.path.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_deeply_nested_json_is_a_decision_error() -> None:
    with pytest.raises(DecisionError) as info:
        DecisionBody.parse(b"[" * 2000 + b"]" * 2000)
    assert info.value.status == 400 and "nest" in str(info.value)


# -- dropped connections: no traceback -------------------------------------------------

@pytest.mark.parametrize("when", ["after connecting", "mid request line", "mid headers", "mid body",
                                  "after the request", "mid response"])
def test_a_client_that_resets_prints_no_traceback(
    server: ReviewServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, when: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="dalle_data.review.server")
    rid = server.session.items[0].record.id
    for _ in range(5):  # a few times over: where the reset lands is up to the scheduler
        sock = connect(server)
        if when == "mid request line":
            sock.sendall(b"POST /api/deci")
        elif when == "mid headers":
            sock.sendall(head(server, "GET", "/api/state")[:-10])
        elif when == "mid body":
            sock.sendall(head(server, "POST", "/api/decision", length=300) + b'{"id": "')
        elif when == "after the request":
            sock.sendall(head(server, "GET", "/api/state"))
        elif when == "mid response":
            sock.sendall(head(server, "GET", f"/img/{rid}"))
            sock.recv(10)
        time.sleep(0.05)
        reset(sock)
        assert wait_for_handlers(5)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    status, _, _ = request(server, "GET", "/api/state")
    assert status == 200  # and the server goes on


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"),
                                   BrokenPipeError(32, "Broken pipe"), ConnectionAbortedError(), TimeoutError()])
def test_handle_error_is_quiet_for_dropped_connections(
    server: ReviewServer, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, error: OSError,
) -> None:
    caplog.set_level(logging.DEBUG, logger="dalle_data.review.server")
    try:
        raise error
    except OSError:
        server.handle_error(None, ("127.0.0.1", 1234))  # type: ignore[arg-type]
    assert "Traceback" not in capfd.readouterr().err
    assert [r.levelno for r in caplog.records if r.name == "dalle_data.review.server"] == [logging.DEBUG]


def test_handle_error_still_reports_real_errors(server: ReviewServer, caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise ValueError("a bug in a handler")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 1234))  # type: ignore[arg-type]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and "a bug in a handler" in caplog.text
