"""Batch API output files that are not what they should be: failed records with the reason, never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dalle_data.generators import openai_batch
from dalle_data.generators.base import Defect
from dalle_data.generators.openai_images import OPENAI_DEFAULTS
from tests.openai_backend.fake_server import BATCHES, FakeOpenAI
from tests.openai_backend.test_batch_api import API, batch_generator, manifest, states

PROMPTS = ["a cat", "a dog", "a car"]


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DALLE_DATA_BATCH_POLL", "0.01")


def lines(rows: list[dict]) -> list[str]:
    return [json.dumps(row) for row in rows]


def run(api: FakeOpenAI) -> list[object]:
    return batch_generator(api)(PROMPTS, [1, 2, 3], OPENAI_DEFAULTS)


def reasons(out: list[object]) -> list[str | None]:
    return [o.reason if isinstance(o, Defect) else None for o in out]


def test_a_truncated_line_is_a_failed_request_and_the_others_are_kept(api_env: FakeOpenAI) -> None:
    api_env.batch_output = lambda rows: "\n".join(lines(rows)[:2] + [lines(rows)[2][:300]]).encode()
    out = run(api_env)
    assert [type(o) for o in out[:2]] == [Image.Image, Image.Image]
    assert "not valid JSON" in reasons(out)[2]


def test_lines_that_are_not_answers_fail_only_the_requests_they_leave_unanswered(api_env: FakeOpenAI) -> None:
    api_env.batch_output = lambda rows: "\n".join(["{not json", "[1, 2]", '"text"', *lines(rows)[1:]]).encode()
    out = run(api_env)
    assert "no answer" in reasons(out)[0] and "3 unreadable line" in reasons(out)[0]
    assert [type(o) for o in out[1:]] == [Image.Image, Image.Image]


def test_a_truncated_output_makes_failed_records_and_a_rerun_finishes(
    api_env: FakeOpenAI, cli, tmp_path: Path
) -> None:
    api_env.batch_output = lambda rows: "\n".join(lines(rows)[:-1] + [lines(rows)[-1][:300]]).encode()
    args = ["generate", *API, "--per-class", "2", "--openai-batch", "--shard-size", "4", "--json",
            "--out", tmp_path / "out"]
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    failed = [r for r in manifest(tmp_path / "out") if r["status"] == "failed"]
    assert failed and all("not valid JSON" in r["error"] for r in failed)
    assert states() == [] and cli(*args).exit_code == 0


def test_an_answer_over_the_size_limit_is_not_read_and_fails_its_request(
    api_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_batch, "MAX_ANSWER_BYTES", 20_000)  # a 32x32 answer is about 4 KB

    def huge(rows: list[dict]) -> bytes:
        rows[1]["padding"] = "x" * 30_000  # the file stays under its bound (60 KB)
        return "\n".join(lines(rows)).encode()

    api_env.batch_output = huge
    out = run(api_env)
    assert isinstance(out[0], Image.Image) and isinstance(out[2], Image.Image)
    assert "over the 20 KB limit" in reasons(out)[1]


def test_an_output_file_over_its_bound_is_read_no_further(api_env: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_batch, "MAX_ANSWER_BYTES", 20_000)  # 3 requests: the file may hold 60 KB
    junk = json.dumps({"custom_id": "junk", "padding": "x" * 15_000})
    api_env.batch_output = lambda rows: "\n".join(lines(rows)[:1] + [junk] * 10 + lines(rows)[1:]).encode()
    out = run(api_env)
    assert isinstance(out[0], Image.Image)
    assert all("over 60 KB" in r and "not read" in r for r in reasons(out)[1:]), reasons(out)


def test_duplicate_answers_are_a_bad_answer_not_the_last_one_wins(api_env: FakeOpenAI) -> None:
    api_env.batch_output = lambda rows: "\n".join(lines(rows) + lines(rows[:1])).encode()
    out = run(api_env)
    assert "more than once" in reasons(out)[0]
    assert [type(o) for o in out[1:]] == [Image.Image, Image.Image]
    assert api_env.count(BATCHES) == 1
