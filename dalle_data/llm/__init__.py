"""LLM-written prompts, and the OpenAI-compatible client they share with the images backend.

``write_llm_prompts`` is what ``prompts --llm`` and ``generate --llm`` call.
Nothing here imports ``openai`` until a request is made.
"""

from __future__ import annotations

from collections.abc import Sequence

from dalle_data.llm.cache import ResponseCache, home
from dalle_data.llm.client import Endpoint, RetryPolicy
from dalle_data.llm.writer import PromptWriter
from dalle_data.prompts.templates import PromptItem

__all__ = ["Endpoint", "PromptWriter", "ResponseCache", "RetryPolicy", "home", "make_writer", "write_llm_prompts"]


def make_writer(
    model: str, *, base_url: str | None = None, seed: int = 0, cache: bool = True,
    timeout: float = 120.0, max_retries: int = 5,
) -> PromptWriter:
    """A prompt writer for ``model`` at ``base_url`` (else ``OPENAI_BASE_URL`` or OpenAI)."""
    endpoint = Endpoint(base_url=base_url, timeout=timeout, retry=RetryPolicy.from_env(max_retries))
    return PromptWriter(model, endpoint, cache=ResponseCache(read=cache), seed=seed)


def write_llm_prompts(
    model: str, classes: Sequence[str], n: int, *, base_url: str | None = None, seed: int = 0,
    cache: bool = True, timeout: float = 120.0, max_retries: int = 5,
) -> list[PromptItem]:
    """``n`` vanilla scene prompts per class written by ``model`` ("A dalmatian lying on the floor")."""
    writer = make_writer(model, base_url=base_url, seed=seed, cache=cache, timeout=timeout, max_retries=max_retries)
    return writer.prompts(classes, n)
