"""One contract for every registered generator backend, run against tiny components of each family.

The diffusers backend: Kandinsky 2.2 (the ``tiny`` preset), Stable Diffusion and SDXL (any diffusers
text-to-image folder), SDXL with a tiny IP-Adapter (variation, fuse by image prompt) and Stable unCLIP
(variation, fuse), each built from configs, saved with ``save_pretrained`` and loaded back through
``--model PATH`` as a downloaded model would be. The openai backend: the local fake server (no seed, so
only batch invariance, defects and refusals apply). A backend without a leg here fails the suite.

* determinism: the same prompt and seed give the same bytes;
* batch invariance: image i depends only on its own prompt (or sources) and seed, not on the batch;
* save/load round trip: a saved model makes the same images;
* defect detection: non-finite decoder output is a ``Defect``, never an image;
* capability refusal: a mode the model cannot make is refused before any generation, naming what it can do.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalle_data.generators.base import Defect
from tests.openai_backend.fake_server import EDIT, GENERATE, FakeOpenAI, Reply

FAMILIES = ["kandinsky", "sd", "sdxl", "stable-unclip", "sdxl+ip-adapter"]
ADAPTED = {"sdxl+ip-adapter": "sdxl"}  # a family with an IP-Adapter loaded (variation and fuse by image prompt)
PROMPTS = ["a cat on a beach", "a dog in the snow", "a red car at night"]
SEEDS = [11, 2**62 + 5, 7]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from dalle_data.generators.registry import load_generator
    from dalle_data.generators.tiny_families import save_tiny

    root = tmp_path_factory.mktemp("families")
    folders = {"kandinsky": root / "kandinsky"}
    load_generator("tiny").save_pretrained(folders["kandinsky"])
    for family in ("sd", "sdxl", "stable-unclip"):
        folders[family] = save_tiny(family, root / family)
    from dalle_data.generators.text2image import Text2ImageGenerator
    from dalle_data.generators.tiny_families import save_tiny_ip_adapter

    for family, base in ADAPTED.items():
        folders[family] = folders[base]
        save_tiny_ip_adapter(Text2ImageGenerator.from_pretrained(folders[base]).pipe, root / f"{family}-weights")
    return folders


def adapter_of(saved: dict[str, Path], family: str) -> Path | None:
    return saved[family].parent / f"{family}-weights" if family in ADAPTED else None


def load(folder: Path, adapter: Path | None = None):  # noqa: ANN201
    from dalle_data.generators.registry import load_generator

    generator = load_generator(str(folder))
    if adapter is not None:
        generator.use_ip_adapter(adapter)
    return generator


def png(image) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def sources() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(3)]


def make(generator, indices: list[int]):  # noqa: ANN001, ANN201
    """Images for the given units: variations of fixed sources for a model without text-to-image or with an
    IP-Adapter loaded (the image prompt is what that leg checks), else text-to-image."""
    settings = generator.defaults
    if "text-to-image" in generator.capabilities and getattr(generator, "ip_adapter", None) is None:
        return generator([PROMPTS[i] for i in indices], [SEEDS[i] for i in indices], settings)
    pics = sources()
    return generator.variation([[pics[i]] for i in indices], [[1.0] for _ in indices], [SEEDS[i] for i in indices],
                               settings)


@pytest.mark.parametrize("family", FAMILIES)
def test_determinism_and_batch_invariance(saved: dict[str, Path], family: str) -> None:
    generator = load(saved[family], adapter_of(saved, family))
    batch = make(generator, [0, 1, 2])
    assert all(not isinstance(im, Defect) for im in batch) and len(batch) == 3
    assert [png(im) for im in make(generator, [0, 1, 2])] == [png(im) for im in batch]  # determinism
    for i in (2, 0):
        alone = make(generator, [i])[0]
        diff = np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(batch[i], dtype=np.int16)).max()
        assert diff <= 2, f"{family}: image {i} depends on its batch (max pixel difference {diff})"
    assert png(batch[0]) != png(batch[1])  # different prompts/seeds, different images


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(saved: dict[str, Path], family: str, tmp_path: Path) -> None:
    generator = load(saved[family], adapter_of(saved, family))
    generator.save_pretrained(tmp_path / "again")
    again = load(tmp_path / "again", adapter_of(saved, family))
    assert type(again) is type(generator) and again.defaults == generator.defaults
    assert again.capabilities == generator.capabilities
    assert [png(im) for im in make(again, [1])] == [png(im) for im in make(generator, [1])]


@pytest.mark.parametrize("family", FAMILIES)
def test_non_finite_output_is_a_defect(saved: dict[str, Path], family: str) -> None:
    import torch

    generator = load(saved[family], adapter_of(saved, family))
    pipe = getattr(generator, "decoder", None) or generator.pipe
    decoder = getattr(pipe, "movq", None) or pipe.vae
    with torch.no_grad():
        for param in decoder.decoder.parameters():
            param.fill_(math.nan)
    out = make(generator, [0, 1])
    assert all(isinstance(im, Defect) and "non-finite" in im.reason for im in out)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_mode_the_model_cannot_make_is_refused_naming_what_it_can(saved: dict[str, Path], family: str) -> None:
    from dalle_data.config import build_spec
    from dalle_data.errors import SpecError
    from dalle_data.job import _check_capabilities
    from dalle_data.modes import MODES

    generator = load(saved[family], adapter_of(saved, family))
    missing = [m for m in ("vanilla", "variation", "fuse", "inpaint") if MODES[m].capability not in generator.capabilities]
    expected = {"kandinsky": [], "sd": ["variation", "fuse"], "sdxl": ["variation", "fuse"],
                "stable-unclip": ["vanilla", "inpaint"], "sdxl+ip-adapter": []}[family]
    assert missing == expected
    for mode in missing:
        spec = build_spec({"classes": ["cat"], "per_class" if MODES[mode].sources == 0 else "per_source": 1,
                           "modes": {mode: 1.0}, "model": str(saved[family]), "scorer": "tiny",
                           **({"from_dir": "x"} if MODES[mode].sources else {})})
        with pytest.raises(SpecError, match=f"cannot do {mode} \\(it can: ") as refused:
            _check_capabilities(spec, generator)
        assert ("ip_adapter=default" if mode in ("variation", "fuse") else "kandinsky-2-2") in str(refused.value)


@pytest.mark.parametrize("family", ["kandinsky", "sd", "sdxl"])
def test_a_negative_prompt_changes_the_images_and_keeps_them_batch_invariant(saved: dict[str, Path],
                                                                              family: str) -> None:
    generator = load(saved[family])
    plain = make(generator, [0, 1])
    generator.set_negative_prompt("blurry, low quality")
    batch = make(generator, [0, 1])
    assert all(png(a) != png(b) for a, b in zip(plain, batch)), f"{family}: the negative prompt changed nothing"
    alone = make(generator, [1])[0]

    def differ(a, b):  # noqa: ANN001, ANN202
        return np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))

    # Image 1 alone and in the batch differ by float reassociation only (a few levels in a few pixels on one
    # thread, through random tiny weights); a negative prompt mixed up across the batch moves it as far as the
    # negative prompt itself does.
    drift, effect = differ(alone, batch[1]), differ(plain[1], batch[1])
    assert drift.max() <= max(2, effect.max() // 10) and drift.mean() < 0.1 * effect.mean(), (drift.max(), effect.max())
    assert [png(im) for im in make(generator, [0, 1])] == [png(im) for im in batch]


def test_generate_variation_and_fuse_on_sdxl_with_an_ip_adapter_option(saved: dict[str, Path], cli,
                                                                       tmp_path: Path) -> None:
    import json

    from tests.image_modes.helpers import make_tree

    make_tree(tmp_path / "photos", {"cat": 2})
    base = ["--model", saved["sdxl"], "--scorer", "tiny", "--classes", "cat", "--per-source", "1", "--mode",
            "variation=0.5,fuse=0.5", "--from", tmp_path / "photos", "--filter", "none", "--steps", "2", "--quiet"]
    refused = cli("generate", *base, "--out", tmp_path / "no-adapter")
    assert refused.exit_code == 2 and "cannot do variation" in refused.stderr and "ip_adapter=default" in refused.stderr
    out = tmp_path / "adapted"
    adapter = adapter_of(saved, "sdxl+ip-adapter")
    result = cli("generate", *base, "--option", f"ip_adapter={adapter}", "--option", "ip_adapter_scale=0.8",
                 "--out", out)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in rows} == {"variation", "fuse"} and all(r["status"] == "kept" for r in rows)
    assert {r["backend"] for r in rows} == {"diffusers:StableDiffusionXLPipeline"}
    missing = cli("generate", *base, "--option", f"ip_adapter={tmp_path / 'photos'}", "--out", tmp_path / "bad")
    assert missing.exit_code == 2 and "no IP-Adapter weights" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_generate_runs_on_a_saved_folder_of_another_family(saved: dict[str, Path], family: str, cli, tmp_path: Path) -> None:
    import json

    import pyarrow.parquet as pq

    out = tmp_path / "out"
    result = cli("generate", "--model", saved[family], "--scorer", "tiny", "--classes", "cat,dog", "--per-class", "2",
                 "--filter", "none", "--steps", "2", "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["backend"] for r in rows} == {f"diffusers:{'StableDiffusionXLPipeline' if family == 'sdxl' else 'StableDiffusionPipeline'}"}
    assert sum(pq.read_table(p).num_rows for p in (out / "parquet" / "train").glob("*.parquet")) == 4


def test_inpaint_with_the_familys_inpaint_pipeline_and_variation_with_stable_unclip(saved: dict[str, Path], cli,
                                                                                     tmp_path: Path) -> None:
    import json

    from tests.image_modes.helpers import make_tree

    make_tree(tmp_path / "photos", {"cat": 2})
    out = tmp_path / "inpainted"
    result = cli("generate", "--model", saved["sd"], "--scorer", "tiny", "--classes", "cat", "--per-source", "1",
                 "--mode", "inpaint", "--from", tmp_path / "photos", "--filter", "none", "--steps", "2", "--out", out,
                 "--quiet")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["inpaint", "inpaint"] and all(r["status"] == "kept" for r in rows)
    out = tmp_path / "variations"
    result = cli("generate", "--model", saved["stable-unclip"], "--scorer", "tiny", "--classes", "cat",
                 "--per-source", "1", "--mode", "variation=0.5,fuse=0.5", "--from", tmp_path / "photos",
                 "--filter", "none", "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["mode"] for r in rows} == {"variation", "fuse"} and all(r["status"] == "kept" for r in rows)
    refused = cli("generate", "--model", saved["stable-unclip"], "--scorer", "tiny", "--classes", "cat",
                  "--per-class", "1", "--out", tmp_path / "text")
    assert refused.exit_code == 2 and "cannot do vanilla (it can: fuse, variation)" in refused.stderr


# -- every registered backend -----------------------------------------------------------------------------------
# The openai backend runs against the local fake server. The API takes no seed, so determinism and the save/load
# round trip do not apply to it (``Backend.reproducible`` says so); batch invariance, defects and refusals do.

LEGS = {"diffusers": FAMILIES, "openai": ["the fake OpenAI server"]}


def test_every_registered_backend_has_a_leg_in_this_contract() -> None:
    from dalle_data.backends import BACKENDS

    assert set(BACKENDS) == set(LEGS), "a new backend needs its tiny components in this contract suite"
    assert {name for name, b in BACKENDS.items() if not b.reproducible} == {"openai"}


def openai_generator(api: FakeOpenAI):  # noqa: ANN201
    from dalle_data.generators.openai_images import OpenAIImageGenerator
    from dalle_data.llm.client import Endpoint, RetryPolicy

    endpoint = Endpoint(api.url, timeout=30.0, retry=RetryPolicy(max_retries=1, base_delay=0.001))
    return OpenAIImageGenerator("gpt-image-1.5", endpoint=endpoint, max_concurrency=4)


def test_openai_batch_invariance_each_answer_goes_to_its_own_request(api_env: FakeOpenAI) -> None:
    from dalle_data.generators.openai_images import OPENAI_DEFAULTS

    api_env.echo = True  # the fake draws each image from its request, so a mix-up shows
    generator, pics = openai_generator(api_env), sources()
    batch = generator(PROMPTS, SEEDS, OPENAI_DEFAULTS)
    alone = [generator([p], [s], OPENAI_DEFAULTS)[0] for p, s in zip(PROMPTS, SEEDS)]
    assert [png(im) for im in batch] == [png(im) for im in alone] and len({png(im) for im in batch}) == 3
    conditions, weights = [[pics[0]], [pics[1], pics[2]], [pics[2]]], [[1.0], [0.5, 0.5], [1.0]]
    batch = generator.variation(conditions, weights, SEEDS, OPENAI_DEFAULTS)
    alone = [generator.variation([c], [w], [s], OPENAI_DEFAULTS)[0] for c, w, s in zip(conditions, weights, SEEDS)]
    assert [png(im) for im in batch] == [png(im) for im in alone] and len({png(im) for im in batch}) == 3
    assert api_env.count(GENERATE) == 6 and api_env.count(EDIT) == 6


def test_openai_an_answer_that_is_no_image_is_a_defect(api_env: FakeOpenAI) -> None:
    from dalle_data.generators.openai_images import OPENAI_DEFAULTS

    garbage = Reply(body={"created": 0, "data": [{"b64_json": "bm90IGFuIGltYWdl"}]})  # "not an image"
    api_env.queue(GENERATE, garbage)
    api_env.queue(EDIT, garbage)
    generator = openai_generator(api_env)
    assert isinstance(generator(PROMPTS[:1], SEEDS[:1], OPENAI_DEFAULTS)[0], Defect)
    assert isinstance(generator.variation([[sources()[0]]], [[1.0]], SEEDS[:1], OPENAI_DEFAULTS)[0], Defect)


def test_openai_a_retired_model_is_refused_naming_the_replacement() -> None:
    from dalle_data.config import build_spec
    from dalle_data.errors import SpecError

    with pytest.raises(SpecError, match="dall-e-3 was retired .* use --model gpt-image-1.5"):
        build_spec({"classes": ["cat"], "per_class": 1, "backend": "openai", "model": "dall-e-3"})
