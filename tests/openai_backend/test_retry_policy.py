"""Backoff, Retry-After parsing and secret scrubbing: the pieces the server tests rely on."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from dalle_data.llm.client import (
    APIError,
    Endpoint,
    RetryPolicy,
    Scrubber,
    check_base_url,
    retry_after,
)


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    policy, rng = RetryPolicy(base_delay=1.0, max_delay=10.0), random.Random(0)
    for attempt, (lo, hi) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8), (5, 10), (5, 10)]):
        delays = {policy.backoff(attempt, rng) for _ in range(50)}
        assert all(lo <= d <= hi for d in delays) and len(delays) > 1, attempt


def test_retry_after_reads_milliseconds_seconds_and_dates() -> None:
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "3"}) == 3.0
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after({"retry-after": when}) <= 30
    assert retry_after({}) is None and retry_after({"retry-after": "soon"}) is None


def test_base_delay_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DALLE_DATA_RETRY_BASE_DELAY", "0.25")
    assert RetryPolicy.from_env(3) == RetryPolicy(max_retries=3, base_delay=0.25)


def test_scrubber_removes_the_key_and_key_shaped_strings() -> None:
    scrub = Scrubber(("my-local-secret",))
    assert scrub("bad key my-local-secret and sk-proj-abcdef123456") == "bad key *** and sk-***"
    assert "my-local-secret" not in repr(scrub)


def test_urls_with_credentials_or_other_schemes_are_refused(monkeypatch) -> None:
    assert check_base_url("http://localhost:8000/v1/") == "http://localhost:8000/v1"
    for bad in ("http://u:p@host/v1", "ftp://host/v1", "localhost:8000"):
        with pytest.raises(APIError):
            check_base_url(bad)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://user:pw@example.com/v1")
    with pytest.raises(APIError, match="no credentials"):
        _ = Endpoint().url
