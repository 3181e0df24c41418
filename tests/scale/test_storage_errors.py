"""Shared storage that refuses, never answers or carries credentials: one line, exit 2, nothing leaked.

Network traffic goes to 127.0.0.1 only: a closed port (refused) or a listening socket that never
accepts (a server that stopped answering).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import FAST

RUN = [*FAST, "--classes", "a,b", "--per-class", "2", "--batch-size", "2", "--shard-size", "2", "--filter", "none"]


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A server that takes connections (the kernel's backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture()
def local_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 calls, if any, go to a closed port on this machine (never to AWS)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def no_file_says(root: Path, secret: str) -> None:
    for path in root.rglob("*") if root.exists() else ():
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


@pytest.mark.parametrize("url", ["s3://alice:hunter2@bucket/run", "ftp://alice:hunter2@127.0.0.1:9/run"])
@pytest.mark.parametrize("command", ["generate --out", "generate --resume", "verify", "merge"])
def test_a_storage_url_with_credentials_is_refused_without_showing_them(cli, local_s3, command: str,
                                                                        url: str) -> None:
    args = {"generate --out": ["generate", *RUN, "--out", url], "generate --resume": ["generate", "--resume", url],
            "verify": ["verify", url], "merge": ["merge", url]}[command]
    result = cli(*args)
    assert result.exit_code == 2
    assert_one_line_error(result, "no credentials in the URL")
    assert "hunter2" not in result.stderr + result.stdout and "alice" not in result.stderr


@pytest.mark.parametrize("classes", [["--classes", "cat"], []])  # --from's classes: read before the lock
def test_a_from_url_with_credentials_is_refused_before_anything_is_written(cli, local_s3, tmp_path: Path,
                                                                            classes: list[str]) -> None:
    out = tmp_path / "out"
    result = cli("generate", *FAST, *classes, "--mode", "variation", "--from", "s3://alice:hunter2@bucket/photos",
                 "--per-source", "1", "--filter", "none", "--out", out)
    assert result.exit_code == 2
    assert_one_line_error(result, "--from", "no credentials in the URL")
    assert "hunter2" not in result.stderr
    no_file_says(out, "hunter2")  # not in the lock file's command line, the run log or the spec


@pytest.mark.parametrize("command", ["generate", "verify"])
def test_unreachable_storage_is_a_one_line_user_error(cli, command: str) -> None:
    url = f"ftp://127.0.0.1:{closed_port()}/run"
    result = cli(*(["generate", *RUN, "--out", url] if command == "generate" else ["verify", url]))
    assert result.exit_code == 2
    assert_one_line_error(result, f"cannot reach {url}", "refused")


def test_storage_that_never_answers_is_given_up_and_the_heartbeat_says_what_it_waits_for(
        silent_port: int, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent_port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "DALLE_DATA_HOME": str(tmp_path),
           "DALLE_DATA_STORAGE_TIMEOUT": "2", "DALLE_DATA_HEARTBEAT": "0.5"}
    t0 = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "dalle_data", "verify", "s3://bucket/run"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert time.monotonic() - t0 < 60  # given up after 2 s; the stuck call does not hold the exit
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "no answer from s3://bucket/run in 2 s" in lines[-1], result.stderr
    assert "DALLE_DATA_STORAGE_TIMEOUT" in lines[-1] and "Traceback" not in result.stderr
    assert any(line.startswith("waiting for storage: reach s3://bucket/run") for line in lines[:-1]), result.stderr


def test_a_shard_upload_that_hangs_mid_run_stops_the_run_with_one_line(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    release = threading.Event()
    put_file = MemoryFileSystem.put_file

    def hang_on_shards(self, local: str, remote: str, **kwargs) -> None:
        if "/shards/" in remote:  # the run's first files go up; then the storage stops answering
            release.wait(30)
        put_file(self, local, remote, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "put_file", hang_on_shards)
    monkeypatch.setenv("DALLE_DATA_STORAGE_TIMEOUT", "1")
    monkeypatch.setenv("DALLE_DATA_HEARTBEAT", "0.3")
    try:
        t0 = time.monotonic()
        result = cli("generate", *RUN, "--out", "memory://hang/run")
        elapsed = time.monotonic() - t0
    finally:
        release.set()
    assert result.exit_code == 2 and elapsed < 25
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no answer from memory://hang/run in 1 s: upload "), result.stderr
    assert any(line.startswith("waiting for storage: upload memory://hang/run/shards/") for line in lines), lines
