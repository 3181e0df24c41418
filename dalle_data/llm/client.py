"""The OpenAI-compatible client shared by the LLM prompt writer and the images backend.

One place decides how hosted-API calls are made:

* **Credentials** come from ``OPENAI_API_KEY`` only (never a flag, a spec
  field or a file), and the base URL from ``--llm-base-url`` / ``--base-url``
  or ``OPENAI_BASE_URL``. A local server (vLLM, Ollama, llama.cpp) needs no key.
* **Retries** are ours, not the client's (``max_retries=0`` on the client), so
  that they can be tested: exponential backoff with jitter on 429, 408, 409,
  5xx, timeouts and dropped connections, honouring ``Retry-After`` /
  ``retry-after-ms``; no retry on authentication (401/403), quota
  (``insufficient_quota``), moderation refusals or other 4xx.
  ``DALLE_DATA_RETRY_BASE_DELAY`` sets the first backoff delay in seconds.
* **Time** is bounded per request: ``Endpoint.timeout`` limits each
  attempt's total time (connect, send, headers, body), not just each read
  (``transport``), and ``CANCEL`` (``cancel_requests()``, set by the signal
  handlers) stops requests in flight, retry waits and new requests with
  ``RequestsCancelled`` (``cancel``).
* **Secrets** never leave: every message built from a server reply is
  scrubbed of the key, and the client library's own loggers are kept quiet.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import logging
import math
import os
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from dalle_data.errors import DalleDataError
from dalle_data.llm.cancel import (
    CANCEL,
    RequestsCancelled,
    cancel_requests,
    check_cancel,
    request_deadline,
    reset_cancel,
    wait,
)
from dalle_data.llm.transport import http_client
from dalle_data.urls import has_credentials

if TYPE_CHECKING:
    import openai

__all__ = [
    "CANCEL", "APIAuthError", "APIError", "APIQuotaError", "APIRequestRejected", "Aborted", "ContentRefused",
    "Endpoint", "RequestsCancelled", "RetryPolicy", "Scrubber", "call_with_retries", "cancel_requests",
    "check_base_url", "env_seconds", "make_client", "reset_cancel", "scrubber",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
RETRY_DELAY_ENV = "DALLE_DATA_RETRY_BASE_DELAY"
OPENAI_URL = "https://api.openai.com/v1"
MAX_RETRY_AFTER = 300.0  # a server asking for a longer wait gets an error, not a silent hour-long sleep
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
_KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-]{6,}")

Kind = Literal["retry", "auth", "quota", "refused", "rejected"]


class APIError(DalleDataError):
    """A hosted-API call failed: after retries where retrying made sense, at once where not."""


class APIAuthError(APIError):
    """The server refused the credentials (or there are none)."""


class APIQuotaError(APIError):
    """The account is out of quota or credit."""


class APIRequestRejected(APIError):
    """The server rejected the request itself (a 4xx other than auth, quota or rate limits)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ContentRefused(Exception):
    """The server refused the content (moderation); the caller records it, the run goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Aborted(Exception):
    """Another call of the same batch failed for good; this one stops waiting."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure."""

    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    @classmethod
    def from_env(cls, max_retries: int = 5) -> RetryPolicy:
        return cls(max_retries=max_retries, base_delay=env_seconds(RETRY_DELAY_ENV, 1.0))

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential delay for retry ``attempt`` (0-based) with jitter in [d/2, d]."""
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        return (rng or random).uniform(ceiling / 2, ceiling)


def env_seconds(name: str, default: float) -> float:
    """Seconds from the environment variable ``name`` (unset or empty: ``default``; negative: 0)."""
    raw = os.environ.get(name, "").strip()
    try:
        seconds = float(raw) if raw else default
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise DalleDataError(f"{name}={raw!r} is not a number of seconds")
    return max(seconds, 0.0)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call: base URL (None: ``OPENAI_BASE_URL`` or OpenAI), timeout, retries."""

    base_url: str | None = None
    timeout: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def url(self) -> str:
        """The base URL calls go to (checked: http(s), no credentials in it)."""
        return check_base_url(self.base_url or os.environ.get(BASE_URL_ENV, "").strip() or OPENAI_URL,
                              "--base-url" if self.base_url else BASE_URL_ENV)


def check_base_url(url: str, what: str = "base URL") -> str:
    """``url`` without a trailing slash; rejects other schemes and user:password@ parts."""
    if has_credentials(url):
        raise APIError(f"{what}: put no credentials in the URL; export {API_KEY_ENV} instead")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise APIError(f"{what} is not an http(s) URL (such as http://localhost:8000/v1)")
    return url.strip().rstrip("/")


class Scrubber:
    """Removes the API key (and anything that looks like one) from text."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._secrets = tuple(s for s in secrets if len(s) >= 4)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _KEY_PATTERN.sub("sk-***", text)

    def deep(self, value: Any) -> Any:
        """``value`` with every string in it (dict keys and values, list items) scrubbed."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.deep(v) for v in value]
        return value

    def __repr__(self) -> str:
        return "Scrubber(***)"


def scrubber() -> Scrubber:
    """The scrubber for the configured key (``OPENAI_API_KEY``; key-shaped strings are always removed)."""
    return Scrubber((os.environ.get(API_KEY_ENV, "").strip(),))


def api_key(url: str) -> str:
    """The key from ``OPENAI_API_KEY``; a placeholder for keyless local servers."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        return key
    if urlsplit(url).hostname not in ("api.openai.com",):
        return "no-key"  # vLLM, Ollama, llama.cpp: the client needs some string
    raise APIAuthError(f"{API_KEY_ENV} is not set: export your API key in it (it is never saved anywhere)")


def make_client(endpoint: Endpoint) -> tuple[openai.OpenAI, Scrubber]:
    """An ``openai.OpenAI`` client with our timeout and no retries of its own, and its scrubber.

    Its HTTP client (``transport.http_client``) bounds each request's total
    time by the deadline ``call_with_retries`` sets, and stops on ``CANCEL``.
    """
    import openai

    for name in ("openai", "httpx2", "httpx", "httpcore", "httpcore2"):
        logging.getLogger(name).setLevel(logging.WARNING)  # request dumps stay out of logs, whatever the level
    url = endpoint.url
    key = api_key(url)
    client = openai.OpenAI(api_key=key, base_url=url, timeout=endpoint.timeout, max_retries=0,
                           http_client=http_client(endpoint.timeout))
    return client, scrubber()  # not the keyless placeholder: "no-key" is no secret (and "piano-key" no leak)


@dataclass(frozen=True)
class Failure:
    kind: Kind
    message: str
    status: int | None = None
    retry_after: float | None = None


def classify(err: Exception, endpoint: Endpoint, scrub: Scrubber) -> Failure:
    """What an exception from the client means for retrying."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        return Failure("retry", f"no answer within {endpoint.timeout:g} s (timeout; raise it with --timeout)")
    if isinstance(err, openai.APIConnectionError):
        return Failure("retry", scrub(f"cannot connect to {endpoint.url}"))
    if not isinstance(err, openai.APIStatusError):
        raise err
    status, code = err.status_code, (err.code or "")
    body = err.body if isinstance(err.body, dict) else {}
    text = str(body.get("message") or err.message or "").strip().splitlines()
    message = scrub(f"HTTP {status}{' ' + code if code else ''}: {text[0][:300] if text else 'no message'}")
    if code in QUOTA_CODES:
        return Failure("quota", message, status)
    if code in REFUSAL_CODES or (status == 400 and "safety system" in message.lower()):
        return Failure("refused", message, status)
    if status in (401, 403):
        return Failure("auth", message, status)
    if status in (408, 409, 429) or status >= 500:
        return Failure("retry", message, status, retry_after(err.response.headers))
    return Failure("rejected", message, status)


def retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def call_with_retries(
    call: Callable[[], T], *, what: str, endpoint: Endpoint, scrub: Scrubber,
    abort: threading.Event | None = None, rng: random.Random | None = None,
) -> T:
    """``call()``, retried on transient failures; other failures raise at once.

    Each attempt may take ``endpoint.timeout`` seconds in all. Raises
    ``APIAuthError``, ``APIQuotaError``, ``APIRequestRejected``,
    ``ContentRefused``, ``APIError`` (retries used up), ``RequestsCancelled``
    (``CANCEL`` is set) or ``Aborted`` (``abort`` is set by a sibling call).
    Messages are scrubbed of the key.
    """
    import openai

    policy = endpoint.retry
    for attempt in itertools.count():
        check_cancel()
        if abort is not None and abort.is_set():
            raise Aborted()
        try:
            with request_deadline(endpoint.timeout):
                return call()
        except (openai.APIStatusError, openai.APIConnectionError) as err:
            failure = classify(err, endpoint, scrub)
        except (json.JSONDecodeError, UnicodeDecodeError):  # a 200 whose body is not JSON: a server fault
            failure = Failure("retry", "the server's answer is not valid JSON")
        _raise_final(failure, what, attempt, policy)
        delay = failure.retry_after if failure.retry_after is not None else policy.backoff(attempt, rng)
        if delay > MAX_RETRY_AFTER:
            raise APIError(f"{what}: {failure.message}; the server asks to wait {delay:.0f} s, rerun later")
        log.warning("%s: %s; retry %d of %d in %.2f s", what, failure.message, attempt + 1, policy.max_retries, delay)
        if wait(delay, abort):
            raise Aborted()
    raise AssertionError("unreachable")


def _raise_final(failure: Failure, what: str, attempt: int, policy: RetryPolicy) -> None:
    """Raise for a failure that is not retried (any more)."""
    if failure.kind == "refused":
        raise ContentRefused(failure.message)
    if failure.kind == "auth":
        raise APIAuthError(f"{what}: {failure.message}; check {API_KEY_ENV} and the base URL")
    if failure.kind == "quota":
        raise APIQuotaError(f"{what}: {failure.message}; the account is out of quota or credit (not retried)")
    if failure.kind == "rejected":
        raise APIRequestRejected(f"{what}: rejected by the server: {failure.message}", failure.status or 400)
    if attempt >= policy.max_retries:
        tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
        raise APIError(f"{what} failed after {tries}: {failure.message}; rerun later (finished work is kept) "
                       "or raise --max-retries")
