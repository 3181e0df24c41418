"""The API key never lands anywhere; API settings are spec fields, the key never is."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from dalle_data.config import build_spec
from tests.openai_backend.fake_server import (
    CHAT,
    GENERATE,
    KEY,
    FakeOpenAI,
    files_containing,
)


def test_the_key_is_in_no_output_file_log_cache_or_message(
    api_env: FakeOpenAI, cli, tmp_path: Path, caplog, monkeypatch
) -> None:
    from tests.openai_backend.fake_server import error

    monkeypatch.setenv("DALLE_DATA_DEBUG", "")  # as users run it
    out = tmp_path / "out"
    api_env.queue(GENERATE, error(400, f"Rejected by the safety system (key {KEY})", "moderation_blocked"))
    args = ["generate", "--backend", "openai", "--llm", "chat-m", "--llm-prompts", "4", "--scorer", "tiny",
            "--filter", "none", "--classes", "cat,dog", "--per-class", "2", "--format", "parquet",
            "--format", "imagefolder", "--keep-rejected", "--out", out]
    with caplog.at_level(logging.DEBUG):
        first = cli(*args)
        again = cli(*args, "--json")
    assert first.exit_code == 0 and again.exit_code == 0, first.stderr + again.stderr
    assert json.loads(again.stdout)["already_complete"]
    assert api_env.count(CHAT) == 2, "the rerun takes its prompts from the cache"
    texts = [first.stdout, first.stderr, again.stdout, again.stderr, caplog.text]
    assert not any(KEY in t for t in texts)
    assert files_containing(out, KEY) == [] and files_containing(tmp_path / "home", KEY) == []
    refused = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()
               if json.loads(x)["status"] == "refused"]
    assert len(refused) == 1 and "(key ***)" in refused[0]["error"], "server text is scrubbed before it is stored"
    saved = yaml.safe_load((out / "spec.yaml").read_text())
    assert saved["backend"] == "openai" and saved["llm"] == "chat-m" and not any("key" in k for k in saved)
    prompts = {json.loads(x)["prompt_source"] for x in (out / "manifest.jsonl").read_text().splitlines()}
    assert prompts == {"llm:chat-m"}


def test_api_settings_that_only_steer_execution_leave_the_hash_alone() -> None:
    def spec(**kw):
        return build_spec({"classes": ["cat"], "per_class": 3, "backend": "openai", **kw})

    base = spec().spec_hash()
    assert base == spec(max_concurrency=16, timeout=5, max_retries=0, base_url="http://127.0.0.1:1/v1").spec_hash()
    assert base != spec(quality="high").spec_hash() and base != spec(model="gpt-image-1-mini").spec_hash()
    assert base != spec(llm="m").spec_hash()
    plain = build_spec({"classes": ["cat"], "per_class": 3})
    assert "backend" not in plain.content_dict() and "llm" not in plain.content_dict(), \
        "specs saved before these fields existed keep their hash"


def test_the_key_cannot_be_a_spec_field() -> None:
    from dalle_data.errors import SpecError

    try:
        build_spec({"classes": ["cat"], "per_class": 1, "api_key": "sk-x"})
    except SpecError as err:
        assert "api_key" in str(err) and "sk-x" not in str(err)
    else:
        raise AssertionError("api_key was accepted")


def test_no_key_for_the_openai_api_fails_before_anything_is_written(cli, tmp_path: Path, monkeypatch) -> None:
    from tests.cli.test_bad_input import assert_one_line_error

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("DALLE_DATA_HOME", str(tmp_path / "home"))
    result = cli("generate", "--backend", "openai", "--classes", "cat,dog", "--per-class", "1", "--out", tmp_path / "o")
    assert_one_line_error(result, "OPENAI_API_KEY is not set")
    assert not (tmp_path / "o").exists()
    assert_one_line_error(cli("prompts", "--classes", "cat", "--llm", "m"), "OPENAI_API_KEY is not set")


def test_help_shows_the_api_options_and_where_the_key_comes_from(cli) -> None:
    text = cli("generate", "--help").stdout
    for flag in ("--backend", "--quality", "--max-concurrency", "--timeout", "--max-retries", "--base-url",
                 "--llm", "--llm-base-url", "--llm-prompts", "--no-cache", "--dry-run", "--price-per-image",
                 "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        assert flag in text, flag
    assert "--llm" in cli("prompts", "--help").stdout


ECHO = f"Bearer {KEY}"  # what a server that echoes the Authorization header sends back


def echoing(rows: list[dict]) -> bytes:
    """The batch's output file with the header echoed in every text field of every failed line."""
    failed = {"status_code": 401, "request_id": ECHO, "body": {"error": {"message": f"Incorrect API key: {ECHO}",
                                                                          "code": f"invalid_api_key {ECHO}"}}}
    refused = {"status_code": 400, "request_id": ECHO, "body": {"error": {"message": f"Rejected: {ECHO}",
                                                                           "code": "moderation_blocked"}}}
    line_error = {"code": ECHO, "message": f"Line failed: {ECHO}"}
    for i, row in enumerate(rows):
        row.update(id=ECHO, **[{"response": failed}, {"response": refused}, {"response": None, "error": line_error}][i % 3])
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def assert_no_key(api: FakeOpenAI, tmp_path: Path, *texts: str) -> None:
    assert api.batches, "the Batch API was used"
    assert not any(KEY in t for t in texts)
    assert files_containing(tmp_path / "out", KEY) == [] and files_containing(tmp_path / "home", KEY) == []


BATCH = ["generate", "--backend", "openai", "--scorer", "tiny", "--filter", "none", "--classes", "cat,dog",
         "--per-class", "2", "--openai-batch", "--keep-rejected", "--allow-short", "--max-attempts", "2", "--quiet"]


def test_the_batch_api_path_scrubs_the_key_from_failed_lines(
    api_env: FakeOpenAI, cli, tmp_path: Path, caplog, monkeypatch
) -> None:
    monkeypatch.setenv("DALLE_DATA_BATCH_POLL", "0.01")
    api_env.batch_output = echoing
    with caplog.at_level(logging.DEBUG):
        result = cli(*BATCH, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert_no_key(api_env, tmp_path, result.stdout, result.stderr, caplog.text)
    rows = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    failed = [r["error"] for r in rows if r["status"] in ("failed", "refused")]
    assert len(failed) == len(rows) >= 4 and all("Bearer ***" in e for e in failed), failed
    assert {r["status"] for r in rows} == {"failed", "refused"}


def test_the_batch_api_path_scrubs_the_key_from_a_failed_batch(
    api_env: FakeOpenAI, cli, tmp_path: Path, caplog, monkeypatch
) -> None:
    from tests.cli.test_bad_input import assert_one_line_error

    monkeypatch.setenv("DALLE_DATA_BATCH_POLL", "0.01")
    api_env.batch_failure = [{"code": f"invalid_api_key {ECHO}", "message": f"Incorrect API key provided: {ECHO}",
                              "param": ECHO, "line": None}]
    with caplog.at_level(logging.DEBUG):
        result = cli(*BATCH, "--out", tmp_path / "out")
    assert_one_line_error(result, "ended failed: Incorrect API key provided: Bearer ***")
    assert_no_key(api_env, tmp_path, result.stdout, result.stderr, caplog.text)
