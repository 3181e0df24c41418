"""Images-API answers that are not what they should be: a failed record or a clear error, never a crash."""

from __future__ import annotations

import base64

import pytest
from PIL import Image, ImageFile

from dalle_data.generators.base import Defect
from dalle_data.generators.openai_images import MAX_IMAGE_PIXELS, OPENAI_DEFAULTS, OpenAIImageGenerator
from dalle_data.llm.client import APIError, Endpoint, RetryPolicy
from tests.openai_backend.fake_server import GENERATE, FakeOpenAI, Reply, blank_png, image_reply, noise_png

NOT_JSON = Reply(body="<html><h1>502 Bad Gateway</h1></html>", headers={"content-type": "application/json"})


def generate(api: FakeOpenAI, retries: int = 5) -> object:
    endpoint = Endpoint(api.url, timeout=30, retry=RetryPolicy(max_retries=retries, base_delay=0.001))
    [out] = OpenAIImageGenerator("gpt-image-1.5", endpoint=endpoint, max_concurrency=1)(["a cat"], [0],
                                                                                           OPENAI_DEFAULTS)
    return out


def b64_reply(value: object) -> Reply:
    return Reply(body={"created": 0, "data": [{"b64_json": value}]})


def test_a_body_that_is_not_json_is_retried(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, NOT_JSON)
    assert isinstance(generate(api_env), Image.Image) and api_env.count(GENERATE) == 2


def test_bodies_that_are_not_json_fail_clearly_after_the_retries(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, NOT_JSON, NOT_JSON)
    with pytest.raises(APIError, match=r"failed after 2 attempts: .*not valid JSON.*rerun later"):
        generate(api_env, retries=1)
    assert api_env.count(GENERATE) == 2


@pytest.mark.parametrize("size", [(20000, 20000), (9000, 9000)])
def test_a_huge_image_is_a_failed_record_and_its_pixels_are_never_decoded(
    api_env: FakeOpenAI, monkeypatch, size: tuple[int, int]
) -> None:
    assert size[0] * size[1] > MAX_IMAGE_PIXELS
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    api_env.queue(GENERATE, image_reply(blank_png(*size)))
    out = generate(api_env)
    assert isinstance(out, Defect), out
    assert f"{size[0]}x{size[1]}" in out.reason and "too large" in out.reason
    assert loads == [], "the pixels were decoded"


def test_an_image_just_within_the_limit_is_kept(api_env: FakeOpenAI) -> None:
    api_env.queue(GENERATE, image_reply(blank_png(300, 200)))
    out = generate(api_env)
    assert isinstance(out, Image.Image) and out.size == (300, 200) and out.mode == "RGB"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [(b64_reply("@@@ not base64 @@@"), "not valid base64"),
     (b64_reply(12345), "not valid base64"),
     (b64_reply(base64.b64encode(b"%PDF-1.7 not an image").decode()), "not an image"),
     (b64_reply(base64.b64encode(noise_png(1)[:200]).decode()), "unreadable image"),
     (Reply(body={"created": 0, "data": 5}), "no image data"),
     (Reply(body={"created": 0, "data": []}), "no image data")],
    ids=["bad-base64", "not-a-string", "not-an-image", "truncated-png", "data-not-a-list", "no-data"],
)
def test_a_broken_image_answer_is_a_failed_record(api_env: FakeOpenAI, reply: Reply, reason: str) -> None:
    api_env.queue(GENERATE, reply)
    out = generate(api_env)
    assert isinstance(out, Defect) and reason in out.reason, out
    assert api_env.count(GENERATE) == 1, "a broken image is recorded, not retried"
