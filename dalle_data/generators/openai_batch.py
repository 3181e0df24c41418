"""The Batch API behind ``OpenAIImageGenerator(batch=True)``: submit a job, wait for it, read its answers.

A job is one JSONL file of ``/v1/images/generations`` requests (``custom_id``
"0", "1", ...). Its batch id is remembered in
``$DALLE_DATA_HOME/openai-batches/<key>.json``, the key a hash of the
requests, so a rerun of the same work finds the same batch and pays nothing
twice. The state of a finished job is kept until the shard holding its
images is committed (``take_kept_state``; the executor releases it after the
shard's marker): a run stopped before that downloads the finished job again.

Waiting is bounded: ``DALLE_DATA_BATCH_POLL`` seconds between two looks
(default 30), ``DALLE_DATA_BATCH_WAIT`` seconds in all (default 25 h, the
24 h completion window and an hour); past that the run stops with one line
and the batch stays remembered for the rerun.

The output (and error) file is streamed line by line, never read whole: a
line over ``MAX_ANSWER_BYTES`` is skipped and fails its request, a file is
read no further than ``MAX_ANSWER_BYTES`` per request of the job, a line
that is not JSON fails its request (when its ``custom_id`` can be read) and
a request answered more than once is a bad answer (none of its answers is
used). Every text from the server (error messages and codes, ids) passes
the key scrubber before it reaches a record, a message or a log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from dalle_data.errors import DalleDataError
from dalle_data.generators.base import Defect, KeptState, Refusal
from dalle_data.llm.cache import home
from dalle_data.llm.cancel import wait
from dalle_data.llm.client import APIError, env_seconds

if TYPE_CHECKING:
    import openai

    from dalle_data.llm.client import Scrubber

log = logging.getLogger(__name__)

POLL_ENV = "DALLE_DATA_BATCH_POLL"
WAIT_ENV = "DALLE_DATA_BATCH_WAIT"
DEFAULT_POLL = 30.0
DEFAULT_WAIT = 25 * 3600.0  # the 24 h completion window, and an hour more
# One output line (one image's answer) at most: a 1536x1024 PNG is under 5 MB, 6.3 MB in base64.
MAX_ANSWER_BYTES = 32_000_000
_CHUNK = 1 << 16  # bytes read at a time
_HEAD = 1024  # bytes kept of an over-long line, to find its custom_id
ENDED = ("completed", "failed", "expired", "cancelled")
GIVEN_UP = ("failed", "expired", "cancelled", "cancelling")
_CUSTOM_ID = re.compile(rb'"custom_id"\s*:\s*"?(\d+)"?')

Output = Any  # Image | Defect | Refusal
Api = Callable[[Callable[[], Any]], Any]


class _OverBound(Exception):
    """The output file is longer than a job of its size can answer."""


@dataclass
class _Reading:
    """What one output file said: the outputs by custom_id, unreadable lines, why it was not read to its end."""

    answers: dict[str, list[Output]] = field(default_factory=dict)
    unreadable: int = 0
    cut: str | None = None

    def merge(self, other: _Reading) -> None:
        for cid, outs in other.answers.items():
            self.answers.setdefault(cid, []).extend(outs)
        self.unreadable += other.unreadable
        self.cut = self.cut or other.cut


class BatchJobs:
    """Batch jobs through ``client``; ``api`` makes one retried call, ``decode`` turns an images-API answer
    into an image or a ``Defect``."""

    def __init__(self, client: openai.OpenAI, api: Api, scrub: Scrubber, decode: Callable[[Any], Output]) -> None:
        self._client, self._api, self._scrub, self._decode = client, api, scrub, decode
        self._finished: list[str] = []

    def run(self, url: str, bodies: list[dict[str, Any]], seeds: list[int]) -> list[Output]:
        """One output per body, from the remembered batch of these requests or a new one."""
        key = hashlib.sha256(json.dumps([url, bodies, seeds], sort_keys=True).encode()).hexdigest()[:32]
        state = home() / "openai-batches" / f"{key}.json"
        batch = self._wait(self._resume(state) or self._submit(state, bodies))
        if batch.status != "completed":
            state.unlink(missing_ok=True)
            raise self._ended(batch)
        outputs = self._outputs(batch, len(bodies))
        self._finished.append(str(state))
        return outputs

    def take_kept_state(self) -> KeptState:
        """The state of the jobs finished since the last call, to release once their images are committed."""
        kept, self._finished = KeptState(tuple(self._finished)), []
        return kept

    # -- submit, resume, wait ---------------------------------------------------------
    def _resume(self, state: Path) -> Any | None:
        if not state.is_file():
            return None
        try:
            batch_id = json.loads(state.read_text())["batch_id"]
            batch = self._api(lambda: self._client.batches.retrieve(batch_id))
        except (ValueError, KeyError, TypeError, OSError):
            return None
        log.info("resuming batch %s (%s)", self._scrub(str(batch.id)), self._scrub(str(batch.status)))
        if batch.status in GIVEN_UP:
            log.warning("batch %s %s; submitting its requests again", self._scrub(str(batch.id)),
                        self._scrub(str(batch.status)))
            return None
        return batch

    def _submit(self, state: Path, bodies: list[dict[str, Any]]) -> Any:
        lines = "".join(json.dumps({"custom_id": str(i), "method": "POST", "url": "/v1/images/generations",
                                    "body": body}) + "\n" for i, body in enumerate(bodies))
        upload = self._api(lambda: self._client.files.create(
            file=("requests.jsonl", lines.encode("utf-8"), "application/jsonl"), purpose="batch"))
        batch = self._api(lambda: self._client.batches.create(
            input_file_id=upload.id, endpoint="/v1/images/generations", completion_window="24h"))
        if self._scrub(str(batch.id)) != str(batch.id):
            raise APIError("the server's batch id contains the API key: it is not stored; check the base URL")
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"batch_id": batch.id, "images": len(bodies)}))
        log.info("submitted batch %s (%d images)", batch.id, len(bodies))
        return batch

    def _wait(self, batch: Any) -> Any:
        """``batch`` once it has ended; at most ``DALLE_DATA_BATCH_WAIT`` seconds of polling."""
        poll, limit = env_seconds(POLL_ENV, DEFAULT_POLL), env_seconds(WAIT_ENV, DEFAULT_WAIT)
        end = time.monotonic() + limit
        while batch.status not in ENDED:
            left = end - time.monotonic()
            if left <= 0:
                raise APIError(self._scrub(
                    f"OpenAI batch {batch.id} is still {batch.status} after {limit:g} s ({WAIT_ENV}); rerun the "
                    f"same command to wait for it again (it is remembered), or raise {WAIT_ENV}"))
            wait(min(poll, left))
            batch_id = batch.id
            batch = self._api(lambda: self._client.batches.retrieve(batch_id))
        return batch

    def _ended(self, batch: Any) -> DalleDataError:
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        message = str(getattr(errors[0], "message", None) or "") if errors else ""
        why = f": {_one_line(message)}" if message else ""
        return DalleDataError(self._scrub(f"OpenAI batch {batch.id} ended {batch.status}{why}; "
                                          "rerun to submit its requests again"))

    # -- the answers --------------------------------------------------------------------
    def _outputs(self, batch: Any, n: int) -> list[Output]:
        reading = _Reading()
        for file_id in (batch.output_file_id, getattr(batch, "error_file_id", None)):
            if file_id:
                reading.merge(self._api(lambda: self._read(file_id, n)))  # a retry reads the file again
        return [self._pick(reading, str(i)) for i in range(n)]

    def _pick(self, reading: _Reading, cid: str) -> Output:
        got = reading.answers.get(cid, [])
        if len(got) == 1:
            return got[0]
        if got:
            return Defect(f"the batch answered this request more than once ({len(got)} times): a bad answer, none is used")
        if reading.cut:
            return Defect(f"the batch returned no answer for this request: {reading.cut}")
        if reading.unreadable:
            return Defect(f"the batch returned no answer for this request ({reading.unreadable} unreadable line(s) "
                          "in its output)")
        return Defect("the batch returned no answer for this request")

    def _read(self, file_id: str, n: int) -> _Reading:
        """One output file, streamed: at most ``MAX_ANSWER_BYTES`` a line and per request of the job."""
        reading, most = _Reading(), MAX_ANSWER_BYTES
        with self._client.files.with_streaming_response.content(file_id) as response:
            try:
                for line, whole in _lines(_chunks(response), most, n * most):
                    self._take(reading, line, whole)
            except _OverBound:
                reading.cut = (f"the batch's output is over {_size(n * most)} ({_size(most)} per request); "
                               "the rest was not read")
        return reading

    def _take(self, reading: _Reading, line: bytes, whole: bool) -> None:
        if not line.strip():
            return
        found = _CUSTOM_ID.search(line)
        if not whole:
            self._answer(reading, found, Defect(f"the batch's answer for this request is over the "
                                                f"{_size(MAX_ANSWER_BYTES)} limit; not read"))
            return
        try:
            row = json.loads(line)
        except ValueError:
            self._answer(reading, found, Defect("the batch's answer for this request is not valid JSON "
                                                "(a truncated line?)"))
            return
        if not isinstance(row, dict) or row.get("custom_id") is None:
            reading.unreadable += 1
            return
        reading.answers.setdefault(str(row["custom_id"]), []).append(self._line(row))

    @staticmethod
    def _answer(reading: _Reading, found: re.Match[bytes] | None, output: Output) -> None:
        if found is None:
            reading.unreadable += 1
        else:
            reading.answers.setdefault(found.group(1).decode(), []).append(output)

    def _line(self, row: dict[str, Any]) -> Output:
        """One line of a batch's output (or error) file as an image, a ``Refusal`` or a ``Defect``."""
        response = _dict(row.get("response"))
        body = _dict(response.get("body"))
        error = _dict(row.get("error")) or _dict(body.get("error"))
        if response.get("status_code", 200) != 200 or error:
            code, message = str(error.get("code") or ""), str(error.get("message") or "request failed")
            if "moderation" in code or "safety" in code or "content_policy" in code:
                return Refusal(self._scrub(message))
            return Defect(self._scrub(f"the batch request failed: {message}"))
        data = [SimpleNamespace(b64_json=d.get("b64_json")) for d in body.get("data") or [] if isinstance(d, dict)]
        return self._decode(SimpleNamespace(data=data))


def _chunks(response: Any) -> Iterator[bytes]:
    """The body's bytes; a transport failure while reading is the client's error (so it is retried)."""
    import httpx2
    import openai

    try:
        yield from response.iter_bytes(_CHUNK)
    except httpx2.TimeoutException as err:
        raise openai.APITimeoutError(request=response.http_response.request) from err
    except httpx2.TransportError as err:
        raise openai.APIConnectionError(request=response.http_response.request) from err


def _lines(chunks: Iterator[bytes], most: int, bound: int) -> Iterator[tuple[bytes, bool]]:
    """``(line, True)`` for each line of the stream; a line over ``most`` bytes is ``(its first bytes, False)``,
    the rest of it skipped. Raises ``_OverBound`` where the stream goes past ``bound`` bytes."""
    buf, over, total = bytearray(), False, 0
    for chunk in chunks:
        start = 0
        while start < len(chunk) or not chunk:
            end = chunk.find(b"\n", start)
            stop = end if end >= 0 else len(chunk)
            total += stop - start + (end >= 0)
            if total > bound:
                raise _OverBound()
            if not over:
                buf += chunk[start:stop]
                if len(buf) > most:
                    over = True
                    del buf[_HEAD:]
            if end < 0:
                break
            yield bytes(buf), not over
            buf.clear()
            over, start = False, end + 1
    if buf or over:
        yield bytes(buf), not over


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def _size(n: int) -> str:
    return f"{n / 1e6:g} MB" if n >= 1_000_000 else f"{n / 1e3:g} KB"
