"""The LLM prompt writer: N distinct scene phrases per class from any OpenAI-compatible chat server.

For each class the writer asks for phrases in requests of at most
``PER_REQUEST``, telling the model what it already wrote, until it has ``n``
distinct ones (or the model stops coming up with new ones), and fills them
into "A {cls} {phrase}". It asks for structured output (a JSON schema,
validated with pydantic); a server that rejects that is asked again with the
JSON format spelled out in the prompt, and the answer is validated the same
way. A reply that is not valid JSON is asked for again, up to
``FORMAT_ATTEMPTS`` times per request.

The finished phrase list of a class is cached (``cache``), keyed by model,
base URL, class, count, seed, temperature and the prompt version, so a rerun
makes no request and gives the same prompts.

Server text is scrubbed of the API key (and key-shaped strings) as soon as it
arrives, and again as phrases, so no key reaches a phrase, the cache, a log
line or an error message, whatever the server echoes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from dalle_data.llm.cache import ResponseCache, cache_key
from dalle_data.llm.client import (
    APIError,
    APIRequestRejected,
    ContentRefused,
    Endpoint,
    call_with_retries,
    make_client,
    scrubber,
)
from dalle_data.llm.phrases import (
    Deduper,
    clean_phrase,
    fill,
    messages,
    parse_phrases,
    response_format,
)
from dalle_data.prompts.templates import PromptItem

if TYPE_CHECKING:
    import openai

    from dalle_data.llm.client import Scrubber

log = logging.getLogger(__name__)

PROMPT_VERSION = 1  # bump when the request text changes: old cache entries stop matching
PER_REQUEST = 50
FORMAT_ATTEMPTS = 3
AVOID_SHOWN = 60  # phrases already written that a follow-up request lists
TEMPERATURE = 1.0


class PromptWriter:
    """Writes scene prompts for classes with ``model`` at ``endpoint``."""

    def __init__(self, model: str, endpoint: Endpoint, *, cache: ResponseCache, seed: int = 0,
                 temperature: float = TEMPERATURE) -> None:
        self.model = model
        self.endpoint = endpoint
        self.cache = cache
        self.seed = seed
        self.temperature = temperature
        self.structured = True  # until the server says it cannot
        self.requests = 0
        self._client: tuple[openai.OpenAI, Scrubber] | None = None
        self._scrub = scrubber()

    @property
    def source(self) -> str:
        """The ``prompt_source`` of what it writes."""
        return f"llm:{self.model}"

    def request_description(self, cls: str, n: int) -> dict[str, Any]:
        """What decides the answer for a class: the cache key's content (no credentials)."""
        return {"version": PROMPT_VERSION, "model": self.model, "base_url": self.endpoint.url, "class": cls,
                "n": n, "seed": self.seed, "temperature": self.temperature, "per_request": PER_REQUEST}

    def cached(self, cls: str, n: int) -> bool:
        return self.cache.has(cache_key(self.request_description(cls, n)))

    def prompts(self, classes: Sequence[str], n: int) -> list[PromptItem]:
        """``n`` vanilla prompts per class (fewer if the model runs dry), class by class."""
        items: list[PromptItem] = []
        for cls in classes:
            items.extend(PromptItem(cls, "vanilla", fill(cls, p), self.source) for p in self.phrases(cls, n))
        return items

    def phrases(self, cls: str, n: int) -> list[str]:
        """Up to ``n`` distinct phrases for ``cls``, from the cache or the server."""
        request = self.request_description(cls, n)
        key = cache_key(request)
        hit = self.cache.get(key)
        if hit is not None and isinstance(hit.get("phrases"), list) and all(isinstance(p, str) for p in hit["phrases"]):
            log.debug("LLM phrases for %r from the cache (%s)", cls, key[:12])
            return [self._scrub(p) for p in hit["phrases"]]  # entries written before scrubbing existed
        phrases = self._collect(cls, n)
        self.cache.put(key, self._scrub.deep({
            "request": request, "phrases": phrases, "structured_output": self.structured,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }))
        return phrases

    def _collect(self, cls: str, n: int) -> list[str]:
        dedupe, out = Deduper(), []
        stale, rounds = 0, math.ceil(n / PER_REQUEST) + 3
        for _ in range(rounds):
            if len(out) >= n or stale >= 2:
                break
            k = min(n - len(out), PER_REQUEST)
            asked = self._ask(cls, k, out[-AVOID_SHOWN:])
            new = [p for p in (clean_phrase(self._scrub(p), cls) for p in asked) if p]
            added = [p for p in new if dedupe.add(p)]
            out.extend(added[: n - len(out)])
            stale = stale + 1 if not added else 0
        if len(out) < n:
            log.warning("--llm %s wrote %d distinct phrases for %r (asked for %d)", self.model, len(out), cls, n)
        if not out:
            raise APIError(f"--llm {self.model} wrote no usable scene phrase for class {cls!r}; try another model")
        return out

    def _ask(self, cls: str, k: int, avoid: list[str]) -> list[str]:
        """One request's phrases; switches to JSON-in-text when structured output is unsupported."""
        reason = ""
        for attempt in range(FORMAT_ATTEMPTS):
            structured = self.structured and not reason  # after a malformed reply, spell the format out
            try:
                text = self._chat(messages(cls, k, avoid, structured), structured)
            except APIRequestRejected as err:
                if not structured or err.status not in (400, 404, 415, 422, 501):
                    raise
                log.info("%s does not take structured output (%s); asking for JSON in the text", self.model, err)
                self.structured = False
                text = self._chat(messages(cls, k, avoid, False), False)
            try:
                return parse_phrases(text)
            except ValueError as err:
                reason = str(err)
                log.warning("--llm %s: reply %d for %r is not valid JSON phrases (%s)", self.model, attempt + 1,
                            cls, reason)
        raise APIError(f"--llm {self.model}: no valid JSON list of phrases for class {cls!r} after "
                       f"{FORMAT_ATTEMPTS} tries (last: {reason}); try another model")

    def _chat(self, msgs: list[dict[str, str]], structured: bool) -> str | None:
        client, scrub = self._client_and_scrubber()
        kwargs: dict[str, Any] = {"model": self.model, "messages": msgs, "temperature": self.temperature,
                                  "seed": self.seed}
        if structured:
            kwargs["response_format"] = response_format()
        self.requests += 1
        try:
            reply = call_with_retries(lambda: client.chat.completions.create(**kwargs),
                                      what=f"--llm {self.model}", endpoint=self.endpoint, scrub=scrub)
        except ContentRefused as err:
            raise APIError(f"--llm {self.model} refused to write prompts: {err.reason}") from None
        text = reply_text(reply)
        return None if text is None else scrub(text)

    def _client_and_scrubber(self) -> tuple[openai.OpenAI, Scrubber]:
        if self._client is None:
            self._client = make_client(self.endpoint)
        return self._client


def reply_text(reply: Any) -> str | None:
    """The text (or refusal) of a chat completion; None for an answer without that shape."""
    try:
        message = reply.choices[0].message
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    text = getattr(message, "content", None) or getattr(message, "refusal", None)
    return text if isinstance(text, str) else None
