"""`--backend openai` variation and fuse: images.edit with reference images (no mask) against the fake server."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalle_data.generators.base import Defect, Refusal
from dalle_data.generators.openai_images import (
    OPENAI_DEFAULTS,
    OpenAIImageGenerator,
    reference_prompt,
)
from dalle_data.llm.client import Endpoint, RetryPolicy
from dalle_data.pricing import INPUT_IMAGE_TOKENS, estimate
from tests.openai_backend.fake_server import (
    BATCHES,
    EDIT,
    FILES,
    GENERATE,
    FakeOpenAI,
    Reply,
    error,
)
from tests.openai_backend.test_images_api import API, manifest

CAT = "a photo of a dalmatian"


def generator(api: FakeOpenAI, *, batch: bool = False) -> OpenAIImageGenerator:
    """One request at a time, so the server sees the items in order."""
    endpoint = Endpoint(api.url, timeout=30.0, retry=RetryPolicy(max_retries=2, base_delay=0.001))
    return OpenAIImageGenerator("gpt-image-1.5", endpoint=endpoint, quality="low", max_concurrency=1, batch=batch)


def picture(seed: int, size: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_a_variation_sends_one_reference_image_and_no_mask(api_env: FakeOpenAI) -> None:
    source = picture(1)
    [out] = generator(api_env).variation([[source]], [[1.0]], [7], OPENAI_DEFAULTS)
    assert isinstance(out, Image.Image)
    [seen] = api_env.requests(EDIT)
    [sent] = seen.images()
    assert Image.open(io.BytesIO(sent)).format == "PNG" and np.array_equal(pixels(sent), np.asarray(source))
    names = [name for name, _ in seen.parts]
    assert "mask" not in names and names.count("image") + names.count("image[]") == 1
    assert seen.form["prompt"].decode() == reference_prompt([1.0])
    assert (seen.form["model"], seen.form["size"], seen.form["quality"]) == (b"gpt-image-1.5", b"1024x1024", b"low")
    assert api_env.count(GENERATE) == 0


def test_a_fuse_sends_both_references_in_condition_order_with_the_weighted_prompt(api_env: FakeOpenAI) -> None:
    a, b = picture(1), picture(2)
    outs = generator(api_env).variation([[a, b], [b, a]], [[0.7, 0.3], [0.5, 0.5]], [1, 2], OPENAI_DEFAULTS)
    assert all(isinstance(o, Image.Image) for o in outs)
    first, second = api_env.requests(EDIT)
    assert [n for n, _ in first.parts if n.startswith("image")] == ["image[]", "image[]"]
    assert [pixels(x).tobytes() for x in first.images()] == [np.asarray(a).tobytes(), np.asarray(b).tobytes()]
    assert [pixels(x).tobytes() for x in second.images()] == [np.asarray(b).tobytes(), np.asarray(a).tobytes()]
    assert "mask" not in first.form and "mask" not in second.form
    assert "mostly like the first reference (70%)" in first.form["prompt"].decode()
    assert "equally" in second.form["prompt"].decode() and "mostly" not in second.form["prompt"].decode()


def test_the_class_prompt_goes_into_the_prompt_not_the_images(api_env: FakeOpenAI) -> None:
    a, b = picture(1), picture(2)
    g = generator(api_env)
    g.variation([[a, CAT]], [[0.6, 0.4]], [0], OPENAI_DEFAULTS)
    g.variation([[a, b, CAT]], [[0.54, 0.36, 0.1]], [0], OPENAI_DEFAULTS)
    variation, fuse = api_env.requests(EDIT)
    assert len(variation.images()) == 1 and len(fuse.images()) == 2
    assert f'"{CAT}"' in variation.form["prompt"].decode() and f'"{CAT}"' in fuse.form["prompt"].decode()
    assert "(60%)" in fuse.form["prompt"].decode(), "image weights are shares of the images' own weights"


def test_a_moderation_refusal_is_a_refusal_and_a_garbage_answer_a_defect(api_env: FakeOpenAI) -> None:
    api_env.queue(EDIT, error(400, "Your request was rejected by the safety system.", "moderation_blocked",
                              "image_generation_user_error"),
                  Reply(body={"created": 0, "data": [{"b64_json": base64.b64encode(b"junk").decode()}]}))
    a, b = picture(1), picture(2)
    refused, broken, fine = generator(api_env).variation([[a], [a, b], [b]], [[1.0], [0.5, 0.5], [1.0]], [0, 1, 2],
                                                         OPENAI_DEFAULTS)
    assert isinstance(refused, Refusal) and "safety system" in refused.reason
    assert isinstance(broken, Defect) and "unreadable image" in broken.reason
    assert isinstance(fine, Image.Image)
    assert api_env.count(EDIT) == 3, "neither a refusal nor a broken image is retried"


def test_with_the_batch_api_on_variations_still_go_to_the_edits_endpoint(api_env: FakeOpenAI) -> None:
    outs = generator(api_env, batch=True).variation([[picture(1)], [picture(1), picture(2)]], [[1.0], [0.5, 0.5]],
                                                    [0, 1], OPENAI_DEFAULTS)
    assert all(isinstance(o, Image.Image) for o in outs)
    assert api_env.count(EDIT) == 2 and api_env.count(BATCHES) == 0 and api_env.count(FILES) == 0


def test_inputs_of_different_lengths_are_refused(api_env: FakeOpenAI) -> None:
    with pytest.raises(ValueError, match="one seed per item"):
        generator(api_env).variation([[picture(1)]], [[1.0]], [0, 1], OPENAI_DEFAULTS)
    with pytest.raises(ValueError, match="at least one source image"):
        generator(api_env).variation([[CAT]], [[1.0]], [0], OPENAI_DEFAULTS)
    assert api_env.count() == 0


def test_the_prompt_builder_is_deterministic_and_names_unequal_weights() -> None:
    assert reference_prompt([0.7, 0.3], CAT) == reference_prompt([0.7, 0.3], CAT)
    assert reference_prompt([0.35, 0.15]) == reference_prompt([0.7, 0.3]), "only the shares count"
    variation = reference_prompt([1.0])
    assert "same subject" in variation and "new viewpoint" in variation and "reference" in variation
    assert "Follow both references equally." in reference_prompt([0.5, 0.5])
    assert "mostly like the first reference (70%), with less of the second (30%)" in reference_prompt([0.7, 0.3])
    assert "mostly like the second reference (60%), with less of the first (40%)" in reference_prompt([0.4, 0.6])
    assert "almost entirely like the first reference (90%)" in reference_prompt([0.9, 0.1])
    assert CAT not in reference_prompt([0.5, 0.5]) and f'"{CAT}"' in reference_prompt([0.5, 0.5], CAT)
    with pytest.raises(ValueError):
        reference_prompt([])


def test_the_token_basis_of_a_fuse_bills_two_input_images() -> None:
    def basis(*modes: str) -> dict:
        tokens = estimate("gpt-image-1.5", "medium", "1024x1024", 10, 50, modes=modes).tokens
        assert tokens is not None
        return tokens

    text, variation, fuse = basis("vanilla"), basis("variation"), basis("fuse")
    assert text["tokens"]["image_input"] == 0
    assert variation["tokens"]["image_input"] == INPUT_IMAGE_TOKENS == basis("inpaint")["tokens"]["image_input"]
    assert fuse["tokens"]["image_input"] == 2 * INPUT_IMAGE_TOKENS
    assert fuse["per_image"] > variation["per_image"] > text["per_image"]
    assert basis("vanilla", "fuse")["tokens"]["image_input"] == 2 * INPUT_IMAGE_TOKENS, "a mixed run: the upper bound"


def photos(root: Path, per_class: int = 2) -> Path:
    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            picture(10 * k + i).save(root / cls / f"{i}.png")
    return root


def test_dry_run_bills_a_fuse_more_input_image_tokens_than_a_variation(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    src = photos(tmp_path / "photos")

    def image_input(mode: str) -> int:
        result = cli("generate", *API, "--mode", mode, "--from", src, "--per-source", "1", "--dry-run", "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["cost"]["token_basis"]["tokens"]["image_input"]

    assert image_input("fuse") == 2 * image_input("variation") == 2 * INPUT_IMAGE_TOKENS
    assert api_env.count() == 0


def test_generate_variation_and_fuse_end_to_end(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = cli("generate", *API, "--mode", "variation,fuse", "--from", photos(tmp_path / "photos"),
                 "--per-source", "1", "--size", "64", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    rows = manifest(out)
    assert json.loads(result.stdout)["kept"] == len(rows) == 8
    assert sorted(r["mode"] for r in rows) == ["fuse"] * 4 + ["variation"] * 4
    assert all(r["source2_id"] for r in rows if r["mode"] == "fuse")
    edits = api_env.requests(EDIT)
    assert api_env.count(GENERATE) == 0 and len(edits) == 8
    assert sorted(len(e.images()) for e in edits) == [1] * 4 + [2] * 4
    assert not any("mask" in e.form for e in edits) and {e.form["size"] for e in edits} == {b"64x64"}


def test_backend_options_reach_the_requests_and_only_when_set(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    src = photos(tmp_path / "photos")
    plain = cli("generate", *API, "--mode", "vanilla,variation", "--from", src, "--per-class", "2",
                "--out", tmp_path / "plain", "--quiet")
    assert plain.exit_code == 0, plain.stderr
    assert not any("moderation" in r.json for r in api_env.requests(GENERATE))
    assert not any("input_fidelity" in r.form for r in api_env.requests(EDIT))
    before = (api_env.count(GENERATE), api_env.count(EDIT))
    tuned = cli("generate", *API, "--mode", "vanilla,variation", "--from", src, "--per-class", "2",
                "--option", "moderation=low", "--option", "input_fidelity=high", "--out", tmp_path / "tuned", "--quiet")
    assert tuned.exit_code == 0, tuned.stderr
    generations, edits = api_env.requests(GENERATE)[before[0]:], api_env.requests(EDIT)[before[1]:]
    assert generations and {r.json["moderation"] for r in generations} == {"low"}
    assert edits and {r.form["input_fidelity"] for r in edits} == {b"high"}
