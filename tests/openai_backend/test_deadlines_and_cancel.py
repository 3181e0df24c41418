"""--timeout bounds a whole request, and a cancel (Ctrl-C, SIGTERM) stops every request at once.

The fake server's ``trickle`` answers send one byte every half second: no
single read ever waits for long, so only a bound on the request's total time
(or a cancel) ends them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from dalle_data.generators.openai_images import OPENAI_DEFAULTS, OpenAIImageGenerator
from dalle_data.llm import make_writer
from dalle_data.llm.client import (
    CANCEL,
    APIError,
    Endpoint,
    RequestsCancelled,
    RetryPolicy,
    call_with_retries,
    cancel_requests,
    make_client,
    reset_cancel,
)
from tests.cli.test_bad_input import assert_one_line_error
from tests.openai_backend.fake_server import CHAT, GENERATE, KEY, FakeOpenAI, error, trickle

PROMPTS_LLM = ["prompts", "--classes", "cat", "--llm", "m", "-n", "2"]


def generator(api: FakeOpenAI, *, timeout: float, retries: int = 0, concurrency: int = 1) -> OpenAIImageGenerator:
    endpoint = Endpoint(api.url, timeout=timeout, retry=RetryPolicy(max_retries=retries, base_delay=0.001))
    return OpenAIImageGenerator("gpt-image-1.5", endpoint=endpoint, max_concurrency=concurrency)


def timed(call: Callable[[], object]) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


def cancel_in(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, CANCEL.set)
    timer.start()
    return timer


@pytest.fixture()
def stalled_url() -> Iterator[str]:
    """A base URL whose connects never complete: a listening socket whose backlog is full and never accepted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}/v1"
    for sock in (*fillers, server):
        sock.close()


# -- --timeout is a bound on the whole request ------------------------------------------------------
def test_a_trickling_chat_answer_fails_at_the_total_timeout(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(CHAT, trickle(0.5))
    start = time.monotonic()
    result = cli(*PROMPTS_LLM, "--timeout", "2", "--max-retries", "0")
    elapsed = time.monotonic() - start
    assert_one_line_error(result, "--llm m failed after 1 attempt", "no answer within 2 s", "--timeout")
    assert elapsed < 5, f"--timeout 2 took {elapsed:.1f} s"


def test_a_trickling_image_answer_fails_at_the_total_timeout(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, trickle(0.5))
    start = time.monotonic()
    with pytest.raises(APIError, match=r"failed after 1 attempt: no answer within 2 s \(timeout"):
        generator(api_env, timeout=2)(["a cat"], [0], OPENAI_DEFAULTS)
    assert time.monotonic() - start < 5 and api_env.count(GENERATE) == 1


def test_a_total_timeout_is_retried_like_any_timeout(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, trickle(0.5))
    took = timed(lambda: generator(api_env, timeout=1, retries=1)(["a cat"], [0], OPENAI_DEFAULTS))
    assert api_env.count(GENERATE) == 2 and took < 4


@pytest.fixture()
def slow_reader_url() -> Iterator[str]:
    """A base URL whose server reads the request steadily but slowly (3 MB/s) and never answers.

    Every write makes progress well within a per-write timeout; only a bound on the total time stops it.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(10)
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            until = time.monotonic() + 10
            while not stop.is_set() and time.monotonic() < until and conn.recv(65536):
                time.sleep(0.02)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    stop.set()
    server.close()
    thread.join(timeout=5)


def test_a_slowly_read_upload_is_bounded_too(api_env: FakeOpenAI, slow_reader_url: str) -> None:
    endpoint = Endpoint(slow_reader_url, timeout=1, retry=RetryPolicy(max_retries=0))
    client, scrub = make_client(endpoint)
    huge = "x" * 30_000_000  # 10 s at 3 MB/s
    start = time.monotonic()
    with pytest.raises(APIError, match=r"no answer within 1 s \(timeout"):
        call_with_retries(lambda: client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                                        "content": huge}]),
                          what="upload", endpoint=endpoint, scrub=scrub)
    assert time.monotonic() - start < 3


def test_a_connect_that_never_completes_is_bounded_too(api_env: FakeOpenAI, stalled_url: str) -> None:
    endpoint = Endpoint(stalled_url, timeout=1, retry=RetryPolicy(max_retries=0))
    start = time.monotonic()
    with pytest.raises(APIError, match=r"no answer within 1 s \(timeout"):
        OpenAIImageGenerator(endpoint=endpoint)(["a cat"], [0], OPENAI_DEFAULTS)
    assert time.monotonic() - start < 3


# -- a cancel stops in-flight requests, retry waits and new requests --------------------------------
def test_a_cancel_stops_a_connect_in_progress(api_env: FakeOpenAI, stalled_url: str) -> None:
    endpoint = Endpoint(stalled_url, timeout=60, retry=RetryPolicy(max_retries=5))
    cancel_in(0.5)
    start = time.monotonic()
    with pytest.raises(RequestsCancelled):
        OpenAIImageGenerator(endpoint=endpoint)(["a cat"], [0], OPENAI_DEFAULTS)
    assert time.monotonic() - start < 1.5


def test_a_cancel_stops_a_trickling_chat_request(api_env: FakeOpenAI) -> None:
    api_env.queue(CHAT, trickle(0.5))
    writer = make_writer("m", timeout=60, max_retries=5)
    cancel_in(0.5)
    start = time.monotonic()
    with pytest.raises(RequestsCancelled, match="^interrupted"):
        writer.phrases("cat", 2)
    assert time.monotonic() - start < 1.5
    assert api_env.count(CHAT) == 1, "a cancelled request is not retried"


def test_a_cancel_stops_every_image_request_of_a_batch(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, trickle(0.5), trickle(0.5), trickle(0.5))
    cancel_in(0.5)
    start = time.monotonic()
    with pytest.raises(RequestsCancelled):
        generator(api_env, timeout=60, retries=5, concurrency=3)(["a", "b", "c"], [0, 1, 2], OPENAI_DEFAULTS)
    assert time.monotonic() - start < 1.5
    assert api_env.count(GENERATE) == 3


@pytest.mark.parametrize("path", [CHAT, GENERATE])
def test_a_cancel_wakes_a_retry_wait(api_env: FakeOpenAI, path: str) -> None:
    api_env.queue(path, error(429, "Rate limit reached", "rate_limit_exceeded", "requests", {"retry-after": "60"}))
    cancel_in(0.5)
    start = time.monotonic()
    with pytest.raises(RequestsCancelled):
        if path == CHAT:
            make_writer("m", timeout=60).phrases("cat", 2)
        else:
            generator(api_env, timeout=60, retries=5)(["a cat"], [0], OPENAI_DEFAULTS)
    assert time.monotonic() - start < 1.5 and api_env.count(path) == 1


def test_after_a_cancel_no_new_request_is_sent_until_reset(api_env: FakeOpenAI) -> None:
    cancel_requests()
    with pytest.raises(RequestsCancelled):
        generator(api_env, timeout=60)(["a cat"], [0], OPENAI_DEFAULTS)
    assert api_env.count() == 0
    reset_cancel()
    [image] = generator(api_env, timeout=60)(["a cat"], [0], OPENAI_DEFAULTS)
    assert isinstance(image, Image.Image)


def test_a_cancelled_prompts_command_exits_130_in_one_line(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    api_env.queue(CHAT, trickle(0.5))
    out = tmp_path / "p.jsonl"
    cancel_in(0.5)
    result = cli(*PROMPTS_LLM, "-o", out)
    assert result.exit_code == 130
    assert_one_line_error(result, "interrupted")
    assert not out.exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_prompts_llm_stops_at_once_on_a_signal(api_env: FakeOpenAI, tmp_path: Path, signum: int) -> None:
    api_env.queue(CHAT, trickle(0.5))
    env = {**os.environ, "DALLE_DATA_DEBUG": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dalle_data", *PROMPTS_LLM, "--timeout", "60"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while api_env.count(CHAT) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api_env.count(CHAT) == 1, "the command never reached the server"
        time.sleep(0.3)  # well inside the request
        sent = time.monotonic()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), stderr
    assert stdout == "" and KEY not in stderr
    assert took < 2, f"the command took {took:.1f} s to stop"
