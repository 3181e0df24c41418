"""The review page's server: the standard library's ``ThreadingHTTPServer``, loopback only.

Routes (nothing else exists: no static files, no directory listing)::

    GET  /                  page.html (no data in it)
    GET  /api/state         the selection, decisions and progress (JSON)
    GET  /img/<id>          the PNG of an image of the selection
    GET  /src/<id>/<1|2>    a thumbnail of its first / second source image (lineage)
    POST /api/decision      {"id": ..., "action": ..., "label": ..., "undo": ...}

Safety:

* It binds to 127.0.0.1 only, and answers only requests whose ``Host`` is
  ``127.0.0.1:<port>`` or ``localhost:<port>`` (no DNS rebinding).
* Every route but ``/`` needs the session token, a random string made at
  start and handed to the browser in the URL's fragment (``#token=...``,
  never sent over the wire by the browser itself): the header
  ``X-Review-Token`` (the page's requests) or ``?token=`` (its ``<img>``
  tags). Writes take the header only, with ``Content-Type:
  application/json``, at most 4 KiB, and a same-origin ``Origin`` if any.
* Images are looked up by record id among the images of the selection;
  paths come from the run's own records, never from the request, so
  ``../``, encoded or absolute paths simply name no image (404).
* Every decision is validated (``session``) before anything is written: an
  unknown id is a 404, an unknown class or a malformed body (deeply nested
  JSON included) a 400, each with a one-line JSON ``{"error": ...}``.
* A connection that sends nothing for ``IDLE_TIMEOUT`` seconds is dropped (a
  body that stops half-way is answered 408), so a silent client cannot hold
  a thread; a client that goes away (reset, closed tab) is logged at debug
  level, not as a traceback.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import re
import secrets
import socket
import sys
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from dalle_data.errors import DalleDataError
from dalle_data.review.decisions import DecisionError
from dalle_data.review.images import ImageStore
from dalle_data.review.session import ReviewSession

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 4096
IDLE_TIMEOUT = 30.0  # seconds a connection may stay silent (before or within a request) before it is dropped
# A client that went away or fell silent: not an error of the server, logged at debug level only.
_DROPPED = (ConnectionError, TimeoutError)
TOKEN_HEADER = "X-Review-Token"
_IMAGE = re.compile(r"/img/([A-Za-z0-9_-]{1,128})")
_SOURCE = re.compile(r"/src/([A-Za-z0-9_-]{1,128})/([12])")
_PAGE_CSP = ("default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
             "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

Response = tuple[int, str, bytes]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def page_html() -> bytes:
    return resources.files("dalle_data.review").joinpath("page.html").read_bytes()


def json_response(data: Any, status: int = 200) -> Response:
    return status, "application/json; charset=utf-8", json.dumps(data, ensure_ascii=False).encode("utf-8")


class ReviewServer(ThreadingHTTPServer):
    """Serves one ``ReviewSession`` on 127.0.0.1; ``url`` carries the session token."""

    daemon_threads = True
    allow_reuse_address = sys.platform != "win32"  # rebind at once after a restart; Windows would share the port

    def __init__(self, session: ReviewSession, port: int = 0, token: str | None = None,
                 idle_timeout: float | None = None) -> None:
        self.session = session
        self.token = token or secrets.token_urlsafe(24)
        self.idle_timeout = IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        self.images = ImageStore(session.run, wanted=session.by_id)
        try:
            super().__init__((HOST, port), ReviewHandler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise DalleDataError(f"port {port} is in use; pick another --port, or leave it out for a free one") from None
            raise DalleDataError(f"cannot listen on {HOST}:{port}: {err.strerror or err}") from None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/#token={self.token}"

    def allowed_hosts(self) -> set[str]:
        return {f"{HOST}:{self.port}", f"localhost:{self.port}"}

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        """An exception escaped a handler: a client that went away is routine, anything else a bug.

        (``socketserver`` would print a traceback to stderr for both.)
        """
        error = sys.exc_info()[1]
        if isinstance(error, _DROPPED):
            log.debug("connection from %s dropped: %r", client_address, error)
        else:
            log.error("review server error on a request from %s", client_address, exc_info=True)


class ReviewHandler(BaseHTTPRequestHandler):
    """Routes a request (see the module docstring); every answer has a body."""

    server: ReviewServer
    server_version = "dalle-data-review"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # read by StreamRequestHandler.setup: the socket's timeout
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _refuse_method(self) -> None:
        self._answer(self._not_allowed)

    def _not_allowed(self, path: str, query: dict[str, list[str]]) -> Response:
        raise HttpError(405, f"{self.command} is not allowed")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _refuse_method

    # --- dispatch ------------------------------------------------------------------

    def _answer(self, route: Callable[[str, dict[str, list[str]]], Response]) -> None:
        extra: dict[str, str] = {}
        try:
            path, _, query = self.path.partition("?")
            if not path.startswith("/"):
                raise HttpError(400, "the request target must be a path")
            if self.headers.get("Host", "") not in self.server.allowed_hosts():
                raise HttpError(403, "wrong Host header; open the URL that dalle-data review printed")
            status, ctype, body = route(path, parse_qs(query))
            if path == "/":
                extra["Content-Security-Policy"] = _PAGE_CSP
        except HttpError as err:
            status, ctype, body = json_response({"error": str(err)}, err.status)
        except DecisionError as err:
            status, ctype, body = json_response({"error": str(err)}, err.status)
        except _DROPPED as err:  # the client went away mid-request: nobody to answer
            log.debug("%s %s: connection dropped: %r", self.command, self.path, err)
            self.close_connection = True
            return
        except Exception as err:
            log.exception("review server error on %s %s", self.command, self.path)
            status, ctype, body = json_response({"error": f"internal error: {type(err).__name__}: {err}"}, 500)
        self._send(status, ctype, body, extra)

    def _send(self, status: int, ctype: str, body: bytes, extra: dict[str, str]) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _check_token(self, query: dict[str, list[str]], allow_query: bool) -> None:
        given = self.headers.get(TOKEN_HEADER) or (query.get("token", [""])[0] if allow_query else "")
        if not given or not hmac.compare_digest(given.encode(), self.server.token.encode()):
            raise HttpError(403, "missing or wrong session token; open the URL that dalle-data review printed")

    # --- routes ------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, list[str]]) -> Response:
        if path == "/":
            return 200, "text/html; charset=utf-8", page_html()
        session = self.server.session
        if path == "/api/state":
            self._check_token(query, allow_query=False)
            return json_response(session.state_json())
        match = _IMAGE.fullmatch(path) or _SOURCE.fullmatch(path)
        if match is None:
            raise HttpError(404, "not found")
        self._check_token(query, allow_query=True)
        item = session.by_id.get(match.group(1))
        if item is None:
            raise HttpError(404, "no such image in this review")
        images = self.server.images
        data = images.png(item.record) if match.re is _IMAGE else images.thumbnail(item.record, int(match.group(2)))
        if data is None:
            raise HttpError(404, "image not found on disk")
        return 200, "image/png", data

    def _post(self, path: str, query: dict[str, list[str]]) -> Response:
        if path != "/api/decision":
            raise HttpError(404, "not found")
        self._check_token({}, allow_query=False)
        origin = self.headers.get("Origin")
        if origin is not None and origin.removeprefix("http://") not in self.server.allowed_hosts():
            raise HttpError(403, f"cross-origin request from {origin} refused")
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise HttpError(415, "send the decision as Content-Type: application/json")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            raise HttpError(411, "Content-Length is required") from None
        if not 0 < length <= MAX_BODY:
            raise HttpError(413, f"the body must be 1 to {MAX_BODY} bytes")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            raise HttpError(408, f"the request body did not arrive within {self.server.idle_timeout:g} s") from None
        if len(body) < length:
            self.close_connection = True
            raise HttpError(400, f"the body ended after {len(body)} of its {length} bytes (Content-Length)")
        return json_response(self.server.session.decide(body))
