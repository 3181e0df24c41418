"""`--openai-batch`: text-to-image through the Batch API of the fake server, and a resumed batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dalle_data.generators.base import Refusal
from dalle_data.generators.openai_images import OPENAI_DEFAULTS, OpenAIImageGenerator
from dalle_data.llm.client import APIError, Endpoint, RetryPolicy
from tests.cli.test_bad_input import assert_one_line_error
from tests.openai_backend.fake_server import BATCHES, FILES, GENERATE, FakeOpenAI, error
from tests.openai_backend.test_images_api import API, manifest


def batch_generator(api: FakeOpenAI) -> OpenAIImageGenerator:
    endpoint = Endpoint(api.url, timeout=30.0, retry=RetryPolicy(max_retries=2, base_delay=0.001))
    return OpenAIImageGenerator("gpt-image-1.5", endpoint=endpoint, batch=True)


def test_a_batch_round_trip_maps_answers_by_custom_id(api_env: FakeOpenAI, monkeypatch) -> None:
    monkeypatch.setenv("DALLE_DATA_BATCH_POLL", "0.01")
    api_env.queue(GENERATE, error(400, "Your request was rejected by the safety system.", "moderation_blocked"))
    generate = batch_generator(api_env)
    out = generate(["a cat", "a dog", "a car"], [1, 2, 3], OPENAI_DEFAULTS)
    assert isinstance(out[0], Refusal) and "safety" in out[0].reason
    assert [im.size for im in out[1:]] == [(32, 32), (32, 32)]
    assert api_env.count(FILES) == 1 and api_env.count(BATCHES) == 1
    lines = [json.loads(x) for x in api_env.files["file-1"].decode().splitlines()]
    assert [line["body"]["prompt"] for line in lines] == ["a cat", "a dog", "a car"]
    assert {line["url"] for line in lines} == {"/v1/images/generations"}
    assert len(states()) == 1, "kept until the shard holding the images is committed"
    generate.take_kept_state().release()  # what the executor does after the shard's marker
    assert not list((Path(os.environ["DALLE_DATA_HOME"]) / "openai-batches").glob("*.json"))  # done: forgotten


def test_generate_with_the_batch_api_makes_the_dataset(api_env: FakeOpenAI, cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DALLE_DATA_BATCH_POLL", "0.01")
    out = tmp_path / "out"
    result = cli("generate", *API, "--per-class", "3", "--openai-batch", "--shard-size", "3", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["kept"] == 6
    assert api_env.count(BATCHES) == 2 and api_env.count(GENERATE) == 0  # one batch per shard, no direct call
    assert len(manifest(out)) == 6 and states() == []
    refused = cli("generate", "--classes", "cat", "--per-class", "1", "--openai-batch", "--model", "tiny",
                  "--out", tmp_path / "local")
    assert refused.exit_code == 2 and "--openai-batch applies to --backend openai" in refused.stderr


def test_a_run_killed_while_its_batch_runs_finds_the_same_batch_again(api_env: FakeOpenAI, tmp_path: Path) -> None:
    api_env.batch_polls = 10**9  # never done while the first process waits
    env = {**os.environ, "DALLE_DATA_BATCH_POLL": "0.05", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    args = [sys.executable, "-m", "dalle_data", "generate", *API, "--per-class", "2", "--openai-batch", "--out",
            str(out), "--quiet"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if api_env.count(f"{BATCHES}/batch-1") >= 3:  # submitted, and polled: the batch runs
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        assert api_env.count(BATCHES) == 1, proc.stderr.read() if proc.poll() is not None else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    api_env.batch_polls = api_env.batches["batch-1"]["polls"] + 1  # it finishes on the next look
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert api_env.count(BATCHES) == 1 and api_env.count(FILES) == 1  # the same batch, not a second one
    assert len([r for r in manifest(out) if r["status"] == "kept"]) == 4


def test_dry_run_prices_the_batch_api_at_half(api_env: FakeOpenAI, cli) -> None:
    plain = json.loads(cli("generate", *API, "--per-class", "10", "--dry-run", "--json").stdout)["cost"]
    batched = json.loads(cli("generate", *API, "--per-class", "10", "--dry-run", "--json", "--openai-batch").stdout)["cost"]
    assert batched["per_image"] == plain["per_image"] / 2 and "Batch API" in batched["note"]
    assert batched["token_basis"]["per_image"] == plain["token_basis"]["per_image"] / 2


def states() -> list[Path]:
    return sorted((Path(os.environ["DALLE_DATA_HOME"]) / "openai-batches").glob("*.json"))


def test_a_batch_that_never_finishes_stops_at_the_wait_limit_and_is_found_again(
    api_env: FakeOpenAI, monkeypatch
) -> None:
    monkeypatch.setenv("DALLE_DATA_BATCH_POLL", "0.01")
    monkeypatch.setenv("DALLE_DATA_BATCH_WAIT", "0.2")
    api_env.held = {"batch-1"}
    generate = batch_generator(api_env)
    with pytest.raises(APIError, match=r"batch-1 is still in_progress after 0.2 s.*rerun.*DALLE_DATA_BATCH_WAIT"):
        generate(["a cat", "a dog"], [1, 2], OPENAI_DEFAULTS)
    assert len(states()) == 1, "the batch is remembered for the rerun"
    api_env.held.clear()
    out = generate(["a cat", "a dog"], [1, 2], OPENAI_DEFAULTS)
    assert [im.size for im in out] == [(32, 32), (32, 32)] and api_env.count(BATCHES) == 1


def test_a_wait_limit_that_is_not_a_number_is_one_line(api_env: FakeOpenAI, cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DALLE_DATA_BATCH_WAIT", "a day")
    result = cli("generate", *API, "--per-class", "1", "--openai-batch", "--out", tmp_path / "out")
    assert_one_line_error(result, "DALLE_DATA_BATCH_WAIT='a day' is not a number of seconds")


def test_a_shard_of_several_jobs_stopped_midway_pays_each_job_once(
    api_env: FakeOpenAI, cli, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("DALLE_DATA_BATCH_POLL", "0.01")
    monkeypatch.setenv("DALLE_DATA_BATCH_WAIT", "0.3")
    api_env.held = {"batch-2"}  # the shard's first job finishes, its second does not while the run waits
    args = ["generate", "--backend", "openai", "--scorer", "tiny", "--filter", "none", "--classes", "cat",
            "--per-class", "4", "--openai-batch", "--shard-size", "4", "--batch-size", "2", "--out", tmp_path / "out"]
    stopped = cli(*args)
    assert_one_line_error(stopped, "batch-2 is still in_progress")
    assert api_env.count(BATCHES) == 2 and len(states()) == 2, "the finished job is kept until its shard is written"
    api_env.held.clear()
    done = cli(*args, "--json")
    assert done.exit_code == 0, done.stderr
    assert api_env.count(BATCHES) == 2, "the finished job is downloaded again, not submitted again"
    assert len([r for r in manifest(tmp_path / "out") if r["status"] == "kept"]) == 4
    assert states() == [], "both jobs are forgotten once the shard's marker is written"
