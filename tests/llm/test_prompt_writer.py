"""`prompts --llm` / the LLM prompt writer against a real HTTP server speaking chat completions."""

from __future__ import annotations

import json
from pathlib import Path

from dalle_data.config import build_spec
from dalle_data.job import plan
from dalle_data.prompts import read_prompts_jsonl
from tests.cli.test_bad_input import assert_one_line_error
from tests.openai_backend.fake_server import (
    CHAT,
    KEY,
    FakeOpenAI,
    chat_reply,
    error,
    files_containing,
    phrases_reply,
)


def user_text(api: FakeOpenAI, i: int) -> str:
    return api.requests(CHAT)[i].json["messages"][-1]["content"]


def test_structured_output_becomes_jsonl_that_generate_takes(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    api_env.queue(CHAT, phrases_reply(["lying down on the floor", "1. A dalmatian running on a beach at dusk.",
                                       "asleep on a red sofa, seen from above"]))
    out = tmp_path / "p.jsonl"
    result = cli("prompts", "--classes", "dalmatian", "--llm", "chat-m", "-n", "3", "-o", out)
    assert result.exit_code == 0, result.stderr
    request = api_env.requests(CHAT)[0].json
    assert request["model"] == "chat-m" and request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["strict"] is True
    items = read_prompts_jsonl(out)
    assert [i.prompt for i in items] == ["A dalmatian lying down on the floor", "A dalmatian running on a beach at dusk",
                                         "A dalmatian asleep on a red sofa, seen from above"]
    assert {i.source for i in items} == {"llm:chat-m"} and {i.mode for i in items} == {"vanilla"}
    taken = plan(build_spec({"classes": ["dalmatian"], "per_class": 3, "prompts": str(out)})).slots()[0].prompts
    assert [p.prompt for p in taken] == [i.prompt for i in items]


def test_the_request_asks_for_diverse_scenes_and_balanced_people(api_env: FakeOpenAI, cli) -> None:
    assert cli("prompts", "--classes", "dalmatian,nurse", "--llm", "m", "-n", "2").exit_code == 0
    system = api_env.requests(CHAT)[0].json["messages"][0]["content"]
    for word in ("settings", "lighting", "viewpoints", "age, gender and skin tone"):
        assert word in system
    assert "depicts people" not in user_text(api_env, 0)  # dalmatian
    assert "depicts people" in user_text(api_env, 1) and "skin tone" in user_text(api_env, 1)  # nurse


def test_a_server_without_structured_output_gets_json_in_text(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(
        CHAT,
        error(400, "response_format json_schema is not supported by this server", "unsupported_parameter"),
        chat_reply('Sure! Here they are:\n```json\n{"phrases": ["digging in a garden", "asleep by a fire"]}\n```'),
    )
    result = cli("prompts", "--classes", "dalmatian,cat", "--llm", "m", "-n", "2")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x)["prompt"] for x in result.stdout.splitlines()]
    assert lines[:2] == ["A dalmatian digging in a garden", "A dalmatian asleep by a fire"]
    sent = [r.json for r in api_env.requests(CHAT)]
    assert "response_format" in sent[0] and "response_format" not in sent[1]
    assert '{"phrases": [' in sent[1]["messages"][-1]["content"]
    assert len(sent) == 3 and "response_format" not in sent[2], "the next class goes straight to JSON in text"


def test_malformed_json_is_asked_again_then_fails_in_one_line(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    api_env.queue(CHAT, chat_reply("Here are phrases: running, jumping"), chat_reply('{"phrases": "not a list"}'),
                  chat_reply('{"phrases": [running'))
    out = tmp_path / "p.jsonl"
    result = cli("prompts", "--classes", "dalmatian", "--llm", "m", "-n", "2", "-o", out)
    assert_one_line_error(result, "--llm m", "no valid JSON", "after 3 tries")
    assert api_env.count(CHAT) == 3 and not out.exists()
    assert "response_format" not in api_env.requests(CHAT)[1].json, "after a bad reply the format is spelled out"


def test_one_malformed_reply_is_recovered(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(CHAT, chat_reply("not json at all"), phrases_reply(["on a boat", "in the rain"]))
    result = cli("prompts", "--classes", "cat", "--llm", "m", "-n", "2")
    assert result.exit_code == 0 and api_env.count(CHAT) == 2
    assert [json.loads(x)["prompt"] for x in result.stdout.splitlines()] == ["A cat on a boat", "A cat in the rain"]


def test_duplicates_and_near_duplicates_are_dropped_and_topped_up(api_env: FakeOpenAI, cli) -> None:
    api_env.queue(
        CHAT,
        phrases_reply(["lying down on the floor", "Lying down on the floor.", "on the floor, lying down",
                       "running on a beach at sunset"]),
        phrases_reply(["running on the beach at sunset", "running along a beach at sunset", "asleep on a red sofa",
                       "jumping over a fence in the snow"]),
    )
    result = cli("prompts", "--classes", "elephant", "--llm", "m", "-n", "4")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(x)["prompt"] for x in result.stdout.splitlines()] == [
        "An elephant lying down on the floor", "An elephant running on a beach at sunset",
        "An elephant asleep on a red sofa", "An elephant jumping over a fence in the snow",
    ]
    follow_up = user_text(api_env, 1)
    assert "Write 2 distinct" in follow_up and "lying down on the floor; running on a beach at sunset" in follow_up


def test_cache_hits_make_no_request_and_no_cache_asks_again(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    args = ["prompts", "--classes", "dalmatian,cat", "--llm", "m", "-n", "5"]
    first = cli(*args)
    assert first.exit_code == 0 and api_env.count() == 2
    again = cli(*args)
    assert again.stdout == first.stdout and api_env.count() == 2, "a rerun is served from the cache"
    fresh = cli(*args, "--no-cache")
    assert fresh.exit_code == 0 and api_env.count() == 4 and fresh.stdout != first.stdout
    assert cli(*args).stdout == fresh.stdout and api_env.count() == 4, "--no-cache stores its fresh answers"
    assert cli("prompts", "--classes", "dalmatian", "--llm", "m", "-n", "6").exit_code == 0 and api_env.count() == 5
    assert cli("prompts", "--classes", "dalmatian", "--llm", "other", "-n", "5").exit_code == 0
    assert api_env.count() == 6
    with FakeOpenAI() as second:
        assert cli("prompts", "--classes", "dalmatian", "--llm", "m", "-n", "5", "--llm-base-url", second.url).exit_code == 0
        assert second.count() == 1, "another base URL is another cache entry"
    entries = list((tmp_path / "home" / "llm").rglob("*.json"))
    assert len(entries) == 5  # (class, model, n, base URL): dalmatian/cat m 5, dalmatian m 6, other 5, second URL
    entry = json.loads(entries[0].read_text())
    assert set(entry["request"]) >= {"model", "base_url", "class", "n", "seed", "temperature"}
    assert files_containing(tmp_path / "home", KEY) == []


def test_wrong_key_is_one_line_without_the_key_and_not_retried(api_env: FakeOpenAI, cli, monkeypatch) -> None:
    wrong = "sk-wrong-0123456789abcdef0123"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    result = cli("prompts", "--classes", "cat", "--llm", "m")
    assert_one_line_error(result, "401", "OPENAI_API_KEY")
    assert wrong not in result.stderr and wrong not in result.stdout
    assert api_env.count() == 1


def test_a_local_server_needs_no_key(cli, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("DALLE_DATA_HOME", str(tmp_path / "home"))
    with FakeOpenAI(key=None) as local:
        result = cli("prompts", "--classes", "cat", "--llm", "llama3.1", "--llm-base-url", local.url, "-n", "2")
        assert result.exit_code == 0, result.stderr
        assert local.requests(CHAT)[0].headers["authorization"] == "Bearer no-key"


def test_a_base_url_with_credentials_is_refused(api_env: FakeOpenAI, cli) -> None:
    result = cli("prompts", "--classes", "cat", "--llm", "m", "--llm-base-url", "http://me:pw@127.0.0.1:9/v1")
    assert_one_line_error(result, "no credentials in the URL")
    assert "pw" not in result.stderr and api_env.count() == 0


def test_generate_llm_plans_llm_scenes_beside_template_modes(api_env: FakeOpenAI) -> None:
    spec = build_spec({"classes": ["cat", "dog"], "per_class": 4, "modes": "vanilla,style", "llm": "m",
                       "llm_prompts": 3})
    first = plan(spec)
    by_mode = {(s.cls, s.mode): s.prompts for s in first.slots()}
    assert [p.source for p in by_mode["cat", "vanilla"]] == ["llm:m"] * 3
    assert all(p.prompt.startswith("A cat ") for p in by_mode["cat", "vanilla"])
    assert all(p.source.startswith("default:style") for p in by_mode["cat", "style"])
    assert set(first.inputs) == {"llm", "templates"} and api_env.count(CHAT) == 2
    assert plan(spec).spec_hash == first.spec_hash and api_env.count(CHAT) == 2, "cached: same prompts, same run"
    assert plan(spec, llm_cache=False).spec_hash != first.spec_hash, "new prompts are a different run"


def test_prompts_llm_needs_the_vanilla_mode(api_env: FakeOpenAI, cli) -> None:
    assert_one_line_error(cli("prompts", "--classes", "cat", "--llm", "m", "--mode", "style"), "--mode vanilla")
    assert api_env.count() == 0
