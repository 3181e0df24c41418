"""The review server: loopback only, token for every read and write, no traversal, validated writes."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dalle_data.review.selection import SelectionOptions
from dalle_data.review.server import ReviewServer
from dalle_data.review.session import ReviewSession
from tests.review.conftest import snapshot


@pytest.fixture(scope="module")
def server(base_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewServer]:
    out = tmp_path_factory.mktemp("server") / "out"
    shutil.copytree(base_run, out)
    srv = ReviewServer(ReviewSession.open(out, SelectionOptions(lowest=3)), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv: ReviewServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, token: bool = True) -> tuple[int, bytes, dict[str, str]]:
    """A raw request: the path goes on the wire exactly as given (no normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    sent = {"Host": f"127.0.0.1:{srv.port}"}
    if token:
        sent["X-Review-Token"] = srv.token
    if body is not None:
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for key, value in sent.items():
        conn.putheader(key, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, dict(response.getheaders())


def first_id(srv: ReviewServer) -> str:
    return srv.session.items[0].record.id


@pytest.fixture()
def unchanged(server: ReviewServer) -> Iterator[None]:
    """Fails the test if anything under the run directory changed."""
    before = snapshot(server.session.run.out)
    yield
    assert snapshot(server.session.run.out) == before


def test_binds_to_loopback_and_prints_a_token_url(server: ReviewServer) -> None:
    assert server.server_address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/#token={server.token}"
    assert len(server.token) >= 32


def test_page_state_and_images_are_served(server: ReviewServer) -> None:
    status, page, headers = request(server, "GET", "/", token=False)
    assert status == 200 and b"dalle-data review" in page and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert b"http://" not in page and b"https://" not in page  # self-contained: no CDN
    status, body, _ = request(server, "GET", "/api/state")
    state = json.loads(body)
    assert status == 200 and state["classes"] == ["cat", "dog"] and state["progress"]["total"] == 3
    record = server.session.items[0].record
    status, png, headers = request(server, "GET", f"/img/{record.id}?token={server.token}", token=False)
    expected = server.session.run.out / "imagefolder" / "train" / record.class_dir / f"{record.id}.png"
    assert status == 200 and headers["Content-Type"] == "image/png" and png == expected.read_bytes()


def test_images_from_parquet_when_there_is_no_imagefolder(base_run: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    shutil.rmtree(out / "imagefolder")
    srv = ReviewServer(ReviewSession.open(out, SelectionOptions(lowest=1)), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        record = srv.session.items[0].record
        status, png, _ = request(srv, "GET", f"/img/{record.id}")
        rows = pq.read_table(out / "parquet" / "train" / f"part-{record.shard}.parquet").to_pylist()
        assert status == 200 and png == next(r["image"]["bytes"] for r in rows if r["id"] == record.id)
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("path", [
    "/../spec.yaml", "/img/../spec.yaml", "/img/../../../../etc/passwd", "/img/..%2f..%2fspec.yaml",
    "/img/%2e%2e/%2e%2e/manifest.jsonl", "/img/%2Fetc%2Fpasswd", "//etc/passwd", "/img//etc/passwd",
    "/img/", "/src/", "/review/", "/review/decisions.jsonl", "/manifest.jsonl", "/imagefolder/train/",
    "/parquet/", "/img/..\\..\\spec.yaml", "/img/%00", "/src/{id}/../../spec.yaml", "/img/{id}/..",
    "/img/{id}.png", "/page.html",
])
def test_path_traversal_and_listings_are_refused(server: ReviewServer, unchanged: None, path: str) -> None:
    status, body, _ = request(server, "GET", path.replace("{id}", first_id(server)) + f"?token={server.token}")
    assert status in (400, 404), (path, status)
    assert b"root:" not in body and b"spec_hash" not in body and b"\x89PNG" not in body


@pytest.mark.parametrize("target", ["http://127.0.0.1/spec.yaml", "/etc/passwd", "file:///etc/passwd", "*"])
def test_absolute_targets_are_refused(server: ReviewServer, unchanged: None, target: str) -> None:
    status, body, _ = request(server, "GET", target)
    assert status in (400, 404) and b"root:" not in body


def test_reads_need_the_token(server: ReviewServer) -> None:
    assert request(server, "GET", "/api/state", token=False)[0] == 403
    assert request(server, "GET", f"/img/{first_id(server)}", token=False)[0] == 403
    assert request(server, "GET", f"/img/{first_id(server)}?token=wrong", token=False)[0] == 403


def test_a_foreign_host_header_is_refused(server: ReviewServer) -> None:
    status, body, _ = request(server, "GET", "/", headers={"Host": f"evil.example:{server.port}"}, token=False)
    assert status == 403 and b"Host" in body


def decision(record_id: str, action: str = "reject", **extra: object) -> bytes:
    return json.dumps({"id": record_id, "action": action, **extra}).encode()


@pytest.mark.parametrize(("case", "status"), [
    ("no token", 403), ("wrong token", 403), ("token in the query only", 403), ("bad json", 400),
    ("not an object", 400), ("unknown id", 404), ("unknown class", 400), ("unknown action", 400),
    ("form encoded", 415), ("too big", 413), ("cross origin", 403), ("wrong path", 404), ("PUT", 405),
    ("DELETE", 405), ("empty body", 413),
])
def test_bad_writes_are_refused_with_a_message_and_nothing_written(
    server: ReviewServer, unchanged: None, case: str, status: int,
) -> None:
    rid = first_id(server)
    method, path, body, headers, token = "POST", "/api/decision", decision(rid), {}, True
    if case == "no token":
        token = False
    elif case == "wrong token":
        headers = {"X-Review-Token": "x" * 32}
    elif case == "token in the query only":
        token, path = False, f"/api/decision?token={server.token}"
    elif case == "bad json":
        body = b'{"id": "' + rid.encode() + b'", "action": '
    elif case == "not an object":
        body = b'["reject"]'
    elif case == "unknown id":
        body = decision("0" * 20)
    elif case == "unknown class":
        body = decision(rid, "relabel", label="../../etc")
    elif case == "unknown action":
        body = decision(rid, "delete")
    elif case == "form encoded":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    elif case == "too big":
        body = decision(rid, label="x" * 5000)
    elif case == "cross origin":
        headers = {"Origin": "http://evil.example"}
    elif case == "wrong path":
        path = "/api/decision/../decision"
    elif case in ("PUT", "DELETE"):
        method = case
    elif case == "empty body":
        body = b""
    got, answer, headers_back = request(server, method, path, body=body, headers=headers, token=token)
    assert got == status, (case, answer)
    assert headers_back["Content-Type"].startswith("application/json")
    assert json.loads(answer)["error"]


def test_a_valid_write_is_saved_at_once(server: ReviewServer) -> None:
    rid = first_id(server)
    log_path = server.session.log.path
    status, body, _ = request(server, "POST", "/api/decision", body=decision(rid, "accept"),
                              headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 200
    answer = json.loads(body)
    assert answer["item"]["decision"]["action"] == "accept" and answer["progress"]["reviewed"] == 1
    assert json.loads(log_path.read_text().splitlines()[-1])["id"] == rid
