"""`--backend openai`: the images API through the real ``openai`` client and a local HTTP server."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalle_data.generators.base import Refusal
from dalle_data.generators.openai_images import (
    OPENAI_DEFAULTS,
    OpenAIImageGenerator,
    alpha_mask,
)
from dalle_data.llm.client import APIError, Endpoint, RetryPolicy
from dalle_data.masks import auto_mask
from tests.cli.test_bad_input import assert_one_line_error
from tests.openai_backend.fake_server import (
    EDIT,
    GENERATE,
    KEY,
    FakeOpenAI,
    Reply,
    error,
    image_reply,
    noise_png,
)

# Two classes: a single class would add CLIP's ~50-word negative vocabulary (slow on a busy CPU).
API = ["--backend", "openai", "--scorer", "tiny", "--filter", "none", "--classes", "cat,dog"]
ONE_AT_A_TIME = ["--max-concurrency", "1"]  # request counts exact: a hard failure stops the batch's other requests


def generator(api: FakeOpenAI, *, timeout: float = 30.0, retries: int = 5, concurrency: int = 4) -> OpenAIImageGenerator:
    endpoint = Endpoint(api.url, timeout=timeout, retry=RetryPolicy(max_retries=retries, base_delay=0.001))
    return OpenAIImageGenerator("gpt-image-1.5", endpoint=endpoint, max_concurrency=concurrency)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_generates_a_labeled_dataset(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("generate", *API, "--per-class", "2", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["complete"] and summary["kept"] == 4 and summary["backend"] == "openai"
    assert summary["model"] == "gpt-image-1.5"
    sent = [r.json for r in api_env.requests(GENERATE)]
    assert len(sent) == 4 and {s["model"] for s in sent} == {"gpt-image-1.5"}
    assert {s["size"] for s in sent} == {"1024x1024"} and {s["quality"] for s in sent} == {"medium"}
    assert sorted(r["prompt"] for r in manifest(out)) == sorted(s["prompt"] for s in sent)
    assert sum("cat" in s["prompt"] for s in sent) == sum("dog" in s["prompt"] for s in sent) == 2
    rows = manifest(out)
    assert {(r["backend"], r["status"]) for r in rows} == {("openai", "kept")}
    assert len(list((out / "parquet" / "train").glob("*.parquet"))) == 1


def test_requests_run_concurrently_up_to_the_limit(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, *[slow_ok(0.15) for _ in range(8)])
    start = time.monotonic()
    images = generator(api_env, concurrency=3)([f"p{i}" for i in range(8)], list(range(8)), OPENAI_DEFAULTS)
    assert all(isinstance(i, Image.Image) for i in images) and api_env.count(GENERATE) == 8
    assert api_env.max_in_flight == 3
    assert time.monotonic() - start < 8 * 0.15, "not one at a time"


def slow_ok(delay: float) -> Reply:
    reply = image_reply(noise_png(1))
    reply.delay = delay
    return reply


def test_429_waits_for_retry_after_then_succeeds(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, error(429, "Rate limit reached for images per minute", "rate_limit_exceeded",
                                  "requests", {"retry-after": "1"}))
    [image] = generator(api_env)(["a cat"], [0], OPENAI_DEFAULTS)
    assert isinstance(image, Image.Image)
    first, second = api_env.requests(GENERATE)
    assert second.started - first.finished >= 0.9, "Retry-After: 1 is honoured (the backoff itself is 1 ms)"


def test_repeated_500_fails_with_a_clear_message(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    api_env.queue(GENERATE, *[error(500, "The server had an error while processing your request.", None,
                                    "server_error")] * 10)
    result = cli("generate", *API, *ONE_AT_A_TIME, "--per-class", "1", "--max-retries", "2", "--out", tmp_path / "o")
    assert_one_line_error(result, "failed after 3 attempts", "HTTP 500", "rerun")
    assert api_env.count(GENERATE) == 3


def test_401_stops_at_once_and_never_shows_the_key(api_env: FakeOpenAI, cli, tmp_path: Path, monkeypatch) -> None:
    wrong = "sk-proj-wrongwrongwrong123456"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    result = cli("generate", *API, *ONE_AT_A_TIME, "--per-class", "3", "--out", tmp_path / "o")
    assert_one_line_error(result, "HTTP 401", "OPENAI_API_KEY")
    assert wrong not in result.stderr and "wrongwrong" not in result.stderr
    assert api_env.count(GENERATE) == 1, "not retried, and the rest of the batch is not sent"


def test_insufficient_quota_is_not_retried(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    api_env.queue(GENERATE, error(429, "You exceeded your current quota, please check your plan and billing details.",
                                  "insufficient_quota", "insufficient_quota"))
    result = cli("generate", *API, *ONE_AT_A_TIME, "--per-class", "1", "--out", tmp_path / "o")
    assert_one_line_error(result, "insufficient_quota", "out of quota", "not retried")
    assert api_env.count(GENERATE) == 1


@pytest.mark.parametrize(
    ("code", "message"),
    [("moderation_blocked", "Your request was rejected by the safety system."),
     ("content_policy_violation", "Your request was rejected as a result of our safety system.")],
)
def test_a_refused_prompt_is_recorded_and_the_run_goes_on(
    api_env: FakeOpenAI, cli, tmp_path: Path, code: str, message: str
) -> None:
    api_env.queue(GENERATE, error(400, message, code, "image_generation_user_error"))
    out = tmp_path / "o"
    result = cli("generate", *API, "--per-class", "2", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["complete"] and summary["kept"] == 4
    assert summary["rejections"]["refused"] == 1
    [refused] = [r for r in manifest(out) if r["status"] == "refused"]
    assert code in refused["error"] and "safety system" in refused["error"] and not refused["kept"]
    assert api_env.count(GENERATE) == summary["generated"], "a refusal is not retried"


def test_a_slow_answer_times_out_and_is_retried(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, slow_ok(1.0))
    [image] = generator(api_env, timeout=0.2)(["a cat"], [0], OPENAI_DEFAULTS)
    assert isinstance(image, Image.Image) and api_env.count(GENERATE) == 2


def test_timeouts_that_outlast_the_retries_fail_clearly(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, slow_ok(1.0), slow_ok(1.0))
    with pytest.raises(APIError, match=r"failed after 2 attempts: no answer within 0.2 s \(timeout"):
        generator(api_env, timeout=0.2, retries=1)(["a cat"], [0], OPENAI_DEFAULTS)
    assert api_env.count(GENERATE) == 2


def test_inpainting_sends_an_alpha_mask_and_keeps_the_unmasked_pixels(api_env: FakeOpenAI) -> None:
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask, _ = auto_mask("center", (64, 64), 0)  # white = repaint
    [result] = generator(api_env).inpaint([source], [mask], ["A cat on a beach"], [0], OPENAI_DEFAULTS)
    [seen] = api_env.requests(EDIT)
    assert seen.form["prompt"] == b"A cat on a beach" and seen.form["model"] == b"gpt-image-1.5"
    sent_mask = np.asarray(Image.open(io.BytesIO(seen.form["mask"])))
    repaint = np.asarray(mask) == 255
    assert sent_mask.shape == (64, 64, 4)
    assert (sent_mask[..., 3][repaint] == 0).all() and (sent_mask[..., 3][~repaint] == 255).all()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(seen.form["image"])).convert("RGB")), np.asarray(source))
    out = np.asarray(result)
    from tests.image_modes.test_inpaint import BAND, grow

    kept = ~grow(repaint, BAND)  # beyond the feathered blend band the pixels are the source's own
    assert result.size == (64, 64) and np.array_equal(out[kept], np.asarray(source)[kept])
    assert not np.array_equal(out[repaint], np.asarray(source)[repaint])


def test_inpaint_mode_end_to_end(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    out = tmp_path / "o"
    for cls in ("cat", "dog"):
        (tmp_path / "photos" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
            tmp_path / "photos" / cls / "a.png")
    result = cli("generate", *API, "--mode", "inpaint", "--from", tmp_path / "photos", "--per-class", "2",
                 "--size", "64", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert api_env.count(EDIT) == 4 and api_env.count(GENERATE) == 0
    assert {r["mode"] for r in manifest(out)} == {"inpaint"} and json.loads(result.stdout)["kept"] == 4


def test_alpha_mask_inverts_white_is_repaint() -> None:
    mask = Image.new("L", (4, 4), 0)
    mask.putpixel((1, 2), 255)
    alpha = np.asarray(alpha_mask(mask, (4, 4)))[..., 3]
    assert alpha[2, 1] == 0 and (np.delete(alpha.ravel(), 2 * 4 + 1) == 255).all()


def test_an_undecodable_image_is_a_failed_record_not_a_crash(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, Reply(body={"created": 0, "data": [{"b64_json": base64.b64encode(b"junk").decode()}]}))
    [out] = generator(api_env)(["a cat"], [0], OPENAI_DEFAULTS)
    assert not isinstance(out, (Image.Image, Refusal)) and "unreadable image" in out.reason


def test_the_key_is_not_in_the_generators_repr(api_env: FakeOpenAI) -> None:
    assert KEY not in repr(generator(api_env))
