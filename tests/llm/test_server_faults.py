"""`prompts --llm` against servers that misbehave: echo the key, answer non-JSON, fail for a while."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dalle_data.prompts import read_prompts_jsonl
from tests.cli.test_bad_input import assert_one_line_error
from tests.openai_backend.fake_server import (
    CHAT,
    KEY,
    FakeOpenAI,
    Reply,
    chat_reply,
    error,
    files_containing,
    phrases_reply,
)

LOOKALIKE = "sk-proj-" + "Lookalike0123" * 2  # not the configured key, but shaped like one
NOT_JSON = Reply(body="<html><h1>502 Bad Gateway</h1></html>", headers={"content-type": "application/json"})


def test_prompts_llm_takes_max_retries_and_timeout(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(CHAT, *[error(500, "The server had an error", None, "server_error")] * 5)
    result = cli("prompts", "--classes", "cat", "--llm", "m", "--max-retries", "1", "--timeout", "30")
    assert_one_line_error(result, "--llm m failed after 2 attempts", "HTTP 500", "--max-retries")
    assert api_env.count(CHAT) == 2
    text = cli("prompts", "--help").stdout
    assert "--timeout" in text and "--max-retries" in text


def test_prompts_llm_retries_five_times_by_default(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(CHAT, *[error(503, "overloaded", None, "server_error")] * 5)
    result = cli("prompts", "--classes", "cat", "--llm", "m", "-n", "2")
    assert result.exit_code == 0, result.stderr
    assert api_env.count(CHAT) == 6


def test_a_key_echoed_in_the_phrases_is_stored_nowhere(
    api_env: FakeOpenAI, cli, tmp_path: Path, caplog
) -> None:
    api_env.queue(CHAT, phrases_reply([f"next to a sign that reads {KEY}", "running on a beach at dusk",
                                       KEY, f"asleep under a poster saying {LOOKALIKE}"]))
    out = tmp_path / "p.jsonl"
    with caplog.at_level(logging.DEBUG):
        first = cli("prompts", "--classes", "cat", "--llm", "m", "-n", "3", "-o", out)
        again = cli("prompts", "--classes", "cat", "--llm", "m", "-n", "3")  # from the cache, to stdout
    assert first.exit_code == 0 and again.exit_code == 0, first.stderr + again.stderr
    assert api_env.count(CHAT) == 1, "the second run is served from the cache"
    prompts = [i.prompt for i in read_prompts_jsonl(out)]
    assert prompts == ["A cat next to a sign that reads ***", "A cat running on a beach at dusk",
                       "A cat asleep under a poster saying sk-***"]
    assert [json.loads(x)["prompt"] for x in again.stdout.splitlines()] == prompts
    for secret in (KEY, LOOKALIKE):
        assert secret not in out.read_text()
        assert not any(secret in t for t in (first.stdout, first.stderr, again.stdout, again.stderr, caplog.text))
        assert files_containing(tmp_path / "home", secret) == []


def test_a_key_echoed_in_a_bad_reply_is_not_in_the_error(api_env: FakeOpenAI, cli, caplog) -> None:
    api_env.queue(CHAT, *[chat_reply(f"{KEY} is all I can say")] * 3)
    with caplog.at_level(logging.DEBUG):
        result = cli("prompts", "--classes", "cat", "--llm", "m")
    assert_one_line_error(result, "no valid JSON", "after 3 tries", "***")
    assert KEY[:12] not in result.stderr and KEY[:12] not in caplog.text


def test_a_body_that_is_not_json_is_retried_then_fails_in_one_line(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(CHAT, NOT_JSON, NOT_JSON, NOT_JSON)
    result = cli("prompts", "--classes", "cat", "--llm", "m", "--max-retries", "2")
    assert_one_line_error(result, "--llm m failed after 3 attempts", "not valid JSON", "rerun later")
    assert api_env.count(CHAT) == 3


def test_one_body_that_is_not_json_is_recovered(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(CHAT, NOT_JSON, phrases_reply(["on a boat", "in the rain"]))
    result = cli("prompts", "--classes", "cat", "--llm", "m", "-n", "2")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(x)["prompt"] for x in result.stdout.splitlines()] == ["A cat on a boat", "A cat in the rain"]


def test_an_answer_of_the_wrong_shape_is_asked_again(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(CHAT, Reply(body={"choices": "none"}), Reply(body=[1, 2]),
                  phrases_reply(["on a boat", "in the rain"]))
    result = cli("prompts", "--classes", "cat", "--llm", "m", "-n", "2")
    assert result.exit_code == 0, result.stderr
    assert api_env.count(CHAT) == 3
