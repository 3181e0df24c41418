"""A local OpenAI-compatible HTTP server for tests: the real ``openai`` client talks to it.

``FakeOpenAI`` binds 127.0.0.1 on a random port and speaks the
endpoints dalle-data uses: ``POST /v1/chat/completions``,
``/v1/images/generations`` and ``/v1/images/edits`` (multipart: one ``image``
or several ``image[]`` reference images, an optional ``mask``), and the Batch
API: ``POST /v1/files`` (multipart), ``POST /v1/batches``, ``GET
/v1/batches/{id}`` (a batch completes after ``batch_polls`` retrievals, one in
``held`` not at all (it expires after ``MAX_HELD_POLLS``, so no test hangs), and
every batch fails with ``batch_failure``'s errors when that is set; its
lines are answered like ``/v1/images/generations`` requests, scripts
included, and ``batch_output`` may rewrite the output file from those answers)
and ``GET /v1/files/{id}/content``. Each
endpoint answers from a queue of scripted ``Reply``s, then from a default
(distinct scene phrases; a small noise PNG). Every request is recorded
(path, headers, JSON or form fields; every multipart part in order, repeated
names included, in ``parts``, and the reference images in ``images()``) so
tests can count calls and look at what was sent; ``max_in_flight`` is the most requests served at once.
A ``Reply`` with ``trickle`` set sends its whole answer (status line
included) one byte every ``trickle`` seconds: a server that is alive but never
done. Handlers are bounded: a scripted delay and a trickle are capped, and
the server stops with the test.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import numpy as np
import pytest
from PIL import Image

CHAT = "/v1/chat/completions"
GENERATE = "/v1/images/generations"
EDIT = "/v1/images/edits"
FILES = "/v1/files"
BATCHES = "/v1/batches"
KEY = "sk-test-" + "S3cr3tK3y" * 4  # what tests export as OPENAI_API_KEY and then look for everywhere
MAX_DELAY = 5.0
MAX_HELD_POLLS = 2000  # a held batch expires after this many retrievals (a client that never gives up fails)
MAX_TRICKLE = 10.0  # seconds a trickling answer goes on at most (a client that never gives up fails, not hangs)

ACTIONS = ["lying down", "running", "sleeping", "jumping", "sitting", "drinking water", "playing", "walking",
           "standing", "rolling over", "digging", "swimming", "resting", "stretching", "yawning", "sniffing"]
PLACES = ["on the kitchen floor", "in deep snow", "at a busy market", "in a forest at dawn", "on a beach at dusk",
          "under a streetlight at night", "in tall grass", "beside a river"]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict (sent as JSON), a str, or bytes
    headers: dict[str, str] = field(default_factory=dict)  # a content-type here replaces the default one
    delay: float = 0.0
    trickle: float = 0.0  # > 0: seconds between the bytes of the answer


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None
    form: dict[str, bytes]  # one value per name (the last, for a repeated name such as ``image[]``)
    started: float
    finished: float = 0.0
    parts: list[tuple[str, bytes]] = field(default_factory=list)  # every multipart part, in order

    def images(self) -> list[bytes]:
        """The image parts of an edit (``image`` or ``image[]``), in the order sent."""
        return [data for name, data in self.parts if name in ("image", "image[]")]


def chat_reply(content: str | None) -> Reply:
    return Reply(body={
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })


def phrases_reply(phrases: list[str]) -> Reply:
    return chat_reply(json.dumps({"phrases": phrases}))


def noise_png(seed: int, size: tuple[int, int] = (32, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, built without allocating its pixels (a few KB for 20000²)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def image_reply(png: bytes) -> Reply:
    return Reply(body={"created": 0, "data": [{"b64_json": base64.b64encode(png).decode("ascii")}]})


def trickle(seconds: float = 0.5) -> Reply:
    """A valid-looking answer sent one byte every ``seconds``: no single read ever waits long."""
    return Reply(body={"phrases": ["x" * 200]}, trickle=seconds)


def error(status: int, message: str, code: str | None = None, type_: str = "invalid_request_error",
          headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": type_, "code": code, "param": None}}, headers or {})


class FakeOpenAI:
    """The server; ``with FakeOpenAI() as api: ... api.url ...``."""

    def __init__(self, key: str | None = KEY) -> None:
        self.key = key  # None: no Authorization check (a local server)
        self.seen: list[Seen] = []
        self.scripts: dict[str, deque[Reply]] = {CHAT: deque(), GENERATE: deque(), EDIT: deque()}
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_polls = 2  # retrievals before a batch is completed
        self.held: set[str] = set()  # batch ids that stay in_progress (up to MAX_HELD_POLLS retrievals)
        self.batch_failure: list[dict[str, Any]] | None = None  # set: batches end failed with these errors
        self.batch_output: Callable[[list[dict[str, Any]]], bytes] | None = None  # the output file from its rows
        self.echo = False  # True: an image answer is drawn from the request (prompt, images), not from its order
        self.in_flight = self.max_in_flight = 0
        self._counter = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def queue(self, path: str, *replies: Reply) -> None:
        self.scripts[path].extend(replies)

    def count(self, path: str | None = None) -> int:
        return sum(1 for s in self.seen if path is None or s.path == path)

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    # -- serving ------------------------------------------------------------------
    def _answer(self, seen: Seen) -> Reply:
        if self.key is not None and seen.headers.get("authorization") != f"Bearer {self.key}":
            # like the real API, the message quotes the key it got: the client must scrub it
            got = seen.headers.get("authorization", "").removeprefix("Bearer ")
            return error(401, f"Incorrect API key provided: {got}.", "invalid_api_key")
        if seen.path == FILES or seen.path == BATCHES or seen.path.startswith(FILES + "/") or seen.path.startswith(BATCHES + "/"):
            return self._batch_api(seen)
        with self._lock:
            script = self.scripts.get(seen.path)
            if script is None:
                return error(404, f"no route {seen.path}", "not_found")
            if script:
                return script.popleft()
            self._counter += 1
            n = self._counter
        if seen.path == CHAT:
            return phrases_reply(self._default_phrases(n, seen))
        if self.echo:
            what = json.dumps(seen.json, sort_keys=True).encode() if seen.json else b"".join(d for _, d in seen.parts)
            n = int.from_bytes(hashlib.sha256(what).digest()[:4], "big")
        return image_reply(noise_png(n))

    def _batch_api(self, seen: Seen) -> Reply:
        with self._lock:
            if seen.path == FILES:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = seen.form.get("file", b"")
                return Reply(body={"id": file_id, "object": "file", "bytes": len(self.files[file_id]), "created_at": 0,
                                   "filename": "requests.jsonl", "purpose": "batch", "status": "processed"})
            if seen.path == BATCHES:
                batch_id = f"batch-{len(self.batches) + 1}"
                self.batches[batch_id] = {
                    "id": batch_id, "object": "batch", "endpoint": seen.json["endpoint"], "errors": None,
                    "input_file_id": seen.json["input_file_id"], "completion_window": seen.json["completion_window"],
                    "status": "in_progress", "output_file_id": None, "error_file_id": None, "created_at": 0, "polls": 0}
                return Reply(body=_public(self.batches[batch_id]))
            if seen.path.startswith(FILES + "/") and seen.path.endswith("/content"):
                file_id = seen.path.split("/")[3]
                if file_id not in self.files:
                    return error(404, f"no file {file_id}", "not_found")
                return Reply(body=self.files[file_id], headers={"content-type": "application/octet-stream"})
            batch = self.batches.get(seen.path.split("/")[3])
            if batch is None:
                return error(404, f"no batch {seen.path}", "not_found")
            batch["polls"] += 1
            if batch["status"] == "in_progress" and batch["id"] in self.held and batch["polls"] >= MAX_HELD_POLLS:
                batch.update(status="expired")
            if batch["status"] != "in_progress" or batch["polls"] < self.batch_polls or batch["id"] in self.held:
                return Reply(body=_public(batch))
            if self.batch_failure is not None:
                batch.update(status="failed", errors={"object": "list", "data": self.batch_failure})
                return Reply(body=_public(batch))
            lines = [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]
        out = []
        for line in lines:  # each answered like a direct request (scripts first), outside the lock
            reply = self._answer(Seen(GENERATE, {"authorization": f"Bearer {self.key}"}, line["body"], {}, 0.0))
            out.append({"id": f"req-{line['custom_id']}", "custom_id": line["custom_id"],
                        "response": {"status_code": reply.status, "request_id": "r", "body": reply.body}, "error": None})
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = (self.batch_output(out) if self.batch_output is not None
                                   else "".join(json.dumps(o) + "\n" for o in out).encode())
            batch.update(status="completed", output_file_id=file_id)
            return Reply(body=_public(batch))

    def _default_phrases(self, n: int, seen: Seen) -> list[str]:
        text = seen.json["messages"][-1]["content"] if seen.json else ""
        k = next((int(w) for w in text.split() if w.isdigit()), 5)
        start = (n - 1) * k
        return [f"{ACTIONS[i % len(ACTIONS)]} {PLACES[(i // len(ACTIONS)) % len(PLACES)]}" for i in range(start, start + k)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.do_POST()

            def do_POST(self) -> None:
                body = self._body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                path = self.path.split("?")[0]
                seen = Seen(path, headers, None, {}, time.monotonic())
                ctype = headers.get("content-type", "")
                if ctype.startswith("application/json"):
                    seen.json = json.loads(body or b"{}")
                elif ctype.startswith("multipart/form-data"):
                    seen.parts = list(_multipart(ctype, body))
                    seen.form = dict(seen.parts)
                with server._lock:
                    server.seen.append(seen)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server._answer(seen)
                    time.sleep(min(reply.delay, MAX_DELAY))
                    self._send(reply)
                except OSError:  # BrokenPipe, ConnectionReset, an SSL EOF
                    pass  # the client gave up (a timeout test)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                    seen.finished = time.monotonic()

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    chunks = []
                    while (size := int(self.rfile.readline().strip() or b"0", 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def _send(self, reply: Reply) -> None:
                body = reply.body
                if isinstance(body, (dict, list)):
                    data, ctype = json.dumps(body).encode(), "application/json"
                else:
                    data, ctype = (body.encode() if isinstance(body, str) else body or b""), "text/plain"
                headers = {"content-type": ctype, "content-length": str(len(data))}
                headers.update({k.lower(): v for k, v in reply.headers.items()})
                if reply.trickle > 0:
                    _trickle(self.wfile, reply, headers, data, server._stopping)
                    return
                self.send_response(reply.status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "polls"}


def _trickle(wfile: Any, reply: Reply, headers: dict[str, str], data: bytes, stopping: threading.Event) -> None:
    """The whole answer, status line first, one byte every ``reply.trickle`` s (``MAX_TRICKLE`` s at most)."""
    head = f"HTTP/1.1 {reply.status} OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    payload = head.encode() + b"\r\n" + data
    until = time.monotonic() + MAX_TRICKLE
    for i in range(len(payload)):
        if stopping.is_set() or time.monotonic() > until:
            return
        wfile.write(payload[i : i + 1])
        time.sleep(reply.trickle)


def _multipart(ctype: str, body: bytes) -> Iterator[tuple[str, bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        yield str(name), part.get_payload(decode=True) or b""


def files_containing(root: Any, needle: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    from pathlib import Path

    return [str(p) for p in Path(root).rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


@pytest.fixture(autouse=True)
def no_cancel_left_over() -> Iterator[None]:
    """A test that cancels requests (``dalle_data.llm.client.CANCEL``) does not leave them cancelled."""
    yield
    from dalle_data.llm.client import reset_cancel

    reset_cancel()


@pytest.fixture()
def fake_api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as api:
        yield api


@pytest.fixture()
def api_env(fake_api: FakeOpenAI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The key, the fake server as OPENAI_BASE_URL, a private home, millisecond backoff."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_api.url)
    monkeypatch.setenv("DALLE_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DALLE_DATA_RETRY_BASE_DELAY", "0.001")
    monkeypatch.delenv("DALLE_DATA_PRICES", raising=False)
    return fake_api
