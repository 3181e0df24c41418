"""IP-Adapter image prompts give SD 1.x and SDXL text-to-image models the variation and fuse modes.

Tiny SD and SDXL pipelines saved with ``save_tiny`` and loaded back as ``--model PATH`` would load them, and
tiny IP-Adapters written in h94/IP-Adapter's own layout (``save_tiny_ip_adapter``): all offline, 64×64, 2 steps.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from dalle_data.errors import ModelLoadError
from dalle_data.generators.base import Defect, GenerationSettings
from dalle_data.generators.ip_adapter import IP_ADAPTERS, ip_adapter_source
from dalle_data.generators.text2image import Text2ImageGenerator

FAMILIES = ["sd", "sdxl"]
SETTINGS = GenerationSettings(width=64, height=64, num_inference_steps=2, prior_num_inference_steps=0,
                              guidance_scale=4.0, prior_guidance_scale=0.0)
SEEDS = [11, 2**62 + 5, 7]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models (``sd``, ``sdxl``) and an IP-Adapter for each (``sd-adapter``, ``sdxl-adapter``)."""
    from dalle_data.generators.tiny_families import save_tiny, save_tiny_ip_adapter

    root = tmp_path_factory.mktemp("ip_adapter")
    folders = {}
    for family in FAMILIES:
        folders[family] = save_tiny(family, root / family)
        folders[f"{family}-adapter"] = save_tiny_ip_adapter(load(folders[family]).pipe, root / f"{family}-adapter")
    return folders


@pytest.fixture(scope="module")
def adapted(saved: dict[str, Path]) -> dict[str, Text2ImageGenerator]:
    generators = {}
    for family in FAMILIES:
        generators[family] = load(saved[family])
        generators[family].use_ip_adapter(saved[f"{family}-adapter"])
    return generators


def load(folder: Path) -> Text2ImageGenerator:
    return Text2ImageGenerator.from_pretrained(folder)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def sources() -> dict[str, Image.Image]:
    """Source images far apart for CLIP: a flat red, a colour ramp, a checkerboard."""
    ramp = np.linspace(0, 255, 48).astype(np.uint8)
    checker = ((np.indices((48, 48)).sum(axis=0) // 6) % 2 * 255).astype(np.uint8)
    return {"red": Image.new("RGB", (48, 48), (230, 20, 20)),
            "ramp": Image.fromarray(np.stack([np.tile(ramp, (48, 1)), np.tile(ramp[:, None], (1, 48)),
                                              np.full((48, 48), 40, np.uint8)], axis=-1)),
            "checker": Image.fromarray(np.stack([checker] * 3, axis=-1))}


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message, message
    return message


def text_and_inpaint(generator: Text2ImageGenerator) -> list[bytes]:
    mask = Image.new("L", (64, 64))
    mask.paste(255, (16, 16, 48, 48))
    made = generator(["a cat on a beach"], [3], SETTINGS)
    made += generator.inpaint([sources()["ramp"].resize((64, 64))], [mask], ["a cat"], [3], SETTINGS)
    return [png(image) for image in made]


def test_the_tiny_adapter_is_laid_out_as_h94_ip_adapter_and_follows_its_seed(saved: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig

    from dalle_data.generators.tiny_families import TINY_IMAGE_DIM, save_tiny_ip_adapter

    for family, cross in (("sd", 32), ("sdxl", 64)):
        source = IP_ADAPTERS[family]
        weights = load_file(saved[f"{family}-adapter"] / source.subfolder / source.weight_name)
        assert {key.split(".")[0] for key in weights} == {"image_proj", "ip_adapter"}
        assert weights["image_proj.proj.weight"].shape == (4 * cross, TINY_IMAGE_DIM)
        assert weights["ip_adapter.1.to_k_ip.weight"].shape[1] == cross
        config = CLIPVisionConfig.from_pretrained(saved[f"{family}-adapter"] / source.subfolder / "image_encoder")
        assert config.projection_dim == TINY_IMAGE_DIM
    sdxl = IP_ADAPTERS["sdxl"]
    pipe = load(saved["sdxl"]).pipe
    again = load_file(save_tiny_ip_adapter(pipe, tmp_path / "same") / sdxl.subfolder / sdxl.weight_name)
    other = load_file(save_tiny_ip_adapter(pipe, tmp_path / "other", seed=1) / sdxl.subfolder / sdxl.weight_name)
    first = load_file(saved["sdxl-adapter"] / sdxl.subfolder / sdxl.weight_name)
    assert all(np.array_equal(first[key].numpy(), again[key].numpy()) for key in first)
    key = "ip_adapter.1.to_v_ip.weight"
    assert not np.array_equal(first[key].numpy(), other[key].numpy())


@pytest.mark.parametrize("family", FAMILIES)
def test_an_adapter_gives_variation_and_fuse_and_leaves_text_to_image_and_inpaint_alone(
        saved: dict[str, Path], family: str) -> None:
    generator = load(saved[family])
    assert generator.capabilities == {"text-to-image", "inpaint"}
    before = text_and_inpaint(generator)
    generator.use_ip_adapter(saved[f"{family}-adapter"], scale=0.6)
    assert generator.capabilities == {"text-to-image", "inpaint", "variation", "fuse"}
    assert text_and_inpaint(generator) == before  # the adapter is off without an image prompt ...
    cross = [p for name, p in generator.pipe.unet.attn_processors.items() if name.endswith("attn2.processor")]
    assert cross and all(p.scale == [0.6] for p in cross)  # ... and back at its scale after
    pics = sources()
    generator.use_ip_adapter(saved[f"{family}-adapter"], scale=0.0)  # replaces the first; scale 0: no image prompt
    red, ramp = generator.variation([[pics["red"]], [pics["ramp"]]], [[1.0], [1.0]], [5, 5], SETTINGS)
    assert png(red) == png(ramp)


@pytest.mark.parametrize(("family", "guidance"), [("sd", 4.0), ("sdxl", 4.0), ("sdxl", 0.0)])
def test_variation_is_deterministic_and_batch_invariant(adapted: dict[str, Text2ImageGenerator], family: str,
                                                        guidance: float) -> None:
    import dataclasses

    generator, pics = adapted[family], sources()
    settings = dataclasses.replace(SETTINGS, guidance_scale=guidance)
    conditions = [[pics["red"]], [pics["ramp"], pics["checker"]], [pics["checker"], "a photo of a dog"]]
    weights = [[1.0], [0.5, 0.5], [1.0, 1.0]]
    batch = generator.variation(conditions, weights, SEEDS, settings)
    assert len(batch) == 3 and not any(isinstance(image, Defect) for image in batch)
    assert [png(im) for im in generator.variation(conditions, weights, SEEDS, settings)] == [png(im) for im in batch]
    for i in range(3):
        alone = generator.variation([conditions[i]], [weights[i]], [SEEDS[i]], settings)[0]
        diff = np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(batch[i], dtype=np.int16)).max()
        assert diff <= 2, f"{family}: image {i} depends on its batch (max pixel difference {diff})"


@pytest.fixture(scope="module")
def mixes(adapted: dict[str, Text2ImageGenerator]) -> dict[str, dict[str, Image.Image]]:
    """Per family, with one seed: variations of red and of ramp, fuses of both at two weightings, red + text."""
    pics = sources()
    names = ["red", "ramp", "fuse", "fuse-ramp", "red+text"]
    conditions = [[pics["red"]], [pics["ramp"]], [pics["red"], pics["ramp"]], [pics["red"], pics["ramp"]],
                  [pics["red"], "a photo of a dog"]]
    weights = [[1.0], [1.0], [0.5, 0.5], [0.2, 0.8], [1.0, 1.0]]
    return {family: dict(zip(names, generator.variation(conditions, weights, [5] * 5, SETTINGS)))
            for family, generator in adapted.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_image_prompt_and_the_class_prompt_steer_the_image(mixes: dict, family: str) -> None:
    made = mixes[family]
    assert difference(made["red"], made["ramp"]) > 1.0
    assert difference(made["red"], made["red+text"]) > 0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fuse_is_neither_source_and_follows_its_weights(mixes: dict, family: str) -> None:
    made = mixes[family]
    for other in ("red", "ramp", "fuse-ramp"):
        assert difference(made["fuse"], made[other]) > 0.5, other
    assert difference(made["fuse-ramp"], made["ramp"]) < difference(made["fuse-ramp"], made["red"])


def test_non_finite_output_is_a_defect(saved: dict[str, Path]) -> None:
    import math

    import torch

    generator = load(saved["sdxl"])
    generator.use_ip_adapter(saved["sdxl-adapter"])
    with torch.no_grad():
        for param in generator.pipe.vae.decoder.parameters():
            param.fill_(math.nan)
    pics = sources()
    out = generator.variation([[pics["red"]], [pics["red"], pics["ramp"]]], [[1.0], [0.5, 0.5]], [1, 2], SETTINGS)
    assert len(out) == 2 and all(isinstance(im, Defect) and "non-finite" in im.reason for im in out)


def test_variation_without_an_adapter_says_how_to_pass_one(saved: dict[str, Path]) -> None:
    generator = load(saved["sd"])
    with pytest.raises(ModelLoadError) as refused:
        generator.variation([[sources()["red"]]], [[1.0]], [1], SETTINGS)
    assert "ip_adapter=PATH|HUB_ID" in one_line(refused) and "ip_adapter_scale=" in str(refused.value)


class FluxPipeline:
    """Stands for a family with IP-Adapters of its own kind (diffusers' Flux mixin), not SD's."""

    unet = object()
    components: ClassVar[dict] = {}

    def load_ip_adapter(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("an SD IP-Adapter must not be loaded into this pipeline")

    def to(self, device: str) -> FluxPipeline:
        return self

    def set_progress_bar_config(self, **kwargs: object) -> None:
        pass

    def __call__(self, prompt: list[str]) -> None:
        pass


@pytest.mark.parametrize("kind", ["stable-unclip", "flux"])
def test_a_model_that_takes_no_ip_adapter_is_refused_in_one_line(saved: dict[str, Path], kind: str) -> None:
    from dalle_data.generators.tiny_families import tiny_stable_unclip

    pipe = tiny_stable_unclip() if kind == "stable-unclip" else FluxPipeline()
    generator = Text2ImageGenerator(pipe, model=kind)
    with pytest.raises(ModelLoadError) as refused:
        generator.use_ip_adapter(saved["sd-adapter"])
    assert "takes no IP-Adapter" in one_line(refused) and "SD 1.x and SDXL" in str(refused.value)
    assert "variation" not in generator.capabilities


def test_where_the_adapter_is_must_hold_one_weight_file(saved: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    generator = load(saved["sd"])
    sd = IP_ADAPTERS["sd"]
    encoder_only = tmp_path / "encoder-only"
    shutil.copytree(saved["sd-adapter"] / sd.subfolder / "image_encoder", encoder_only / "image_encoder")
    for folder in (tmp_path / "empty", encoder_only):
        folder.mkdir(exist_ok=True)
        with pytest.raises(ModelLoadError) as refused:
            generator.use_ip_adapter(folder)
        assert f"no IP-Adapter weights (*.safetensors, *.bin) in {folder}" in one_line(refused)
    two = tmp_path / "two"
    shutil.copytree(saved["sd-adapter"] / sd.subfolder, two)
    shutil.copy(two / sd.weight_name, two / "ip-adapter-other.safetensors")
    with pytest.raises(ModelLoadError) as refused:
        generator.use_ip_adapter(two)
    assert "several IP-Adapter weight files" in one_line(refused)
    with pytest.raises(ModelLoadError) as refused:
        generator.use_ip_adapter(tmp_path / "no" / "such" / "folder")
    assert "is not a folder, a weight file or a hub id" in one_line(refused)
    assert "variation" not in generator.capabilities
    generator.use_ip_adapter(two / "ip-adapter-other.safetensors")  # a weight file names the one to use
    assert generator.ip_adapter == str(two / "ip-adapter-other.safetensors") and "fuse" in generator.capabilities


@pytest.mark.parametrize(("family", "other"), [("sdxl", "sd"), ("sd", "sdxl")])
def test_an_adapter_of_another_family_does_not_fit_and_changes_nothing(saved: dict[str, Path], family: str,
                                                                      other: str) -> None:
    generator = load(saved[family])
    before = png(generator(["a cat"], [3], SETTINGS)[0])
    with pytest.raises(ModelLoadError) as refused:
        generator.use_ip_adapter(saved[f"{other}-adapter"])
    message = one_line(refused)
    assert "does not fit" in message and "shape" in message and IP_ADAPTERS[family].weight_name in message
    assert "variation" not in generator.capabilities and generator.pipe.image_encoder is None
    assert png(generator(["a cat"], [3], SETTINGS)[0]) == before
    generator.use_ip_adapter(saved[f"{family}-adapter"])  # nothing of the failed load is left in the way
    assert not isinstance(generator.variation([[sources()["red"]]], [[1.0]], [1], SETTINGS)[0], Defect)


def test_hub_sources_resolve_to_h94_and_fail_offline_in_one_line(saved: dict[str, Path]) -> None:
    assert ip_adapter_source(None, "sdxl") == ip_adapter_source("default", "sdxl") == IP_ADAPTERS["sdxl"]
    assert (IP_ADAPTERS["sdxl"].repo, IP_ADAPTERS["sdxl"].subfolder) == ("h94/IP-Adapter", "sdxl_models")
    plus = ip_adapter_source("h94/IP-Adapter/models/ip-adapter-plus_sd15.safetensors", "sd")
    assert (plus.repo, plus.subfolder, plus.weight_name, plus.local) == ("h94/IP-Adapter", "models",
                                                                          "ip-adapter-plus_sd15.safetensors", False)
    other = ip_adapter_source("someone/their-adapter", "sd")
    assert (other.subfolder, other.weight_name) == ("models", "ip-adapter_sd15.safetensors")
    generator = load(saved["sdxl"])
    with pytest.raises(ModelLoadError) as refused:  # tests run with HF_HUB_OFFLINE=1 (conftest)
        generator.use_ip_adapter("dalle-data-tests/no-such-ip-adapter")
    assert "'dalle-data-tests/no-such-ip-adapter'" in one_line(refused) and "HF_HUB_OFFLINE" in str(refused.value)
    assert "variation" not in generator.capabilities


def test_a_saved_model_leaves_its_adapter_out(adapted: dict[str, Text2ImageGenerator], saved: dict[str, Path],
                                              tmp_path: Path) -> None:
    generator = adapted["sd"]
    generator.save_pretrained(tmp_path / "again")
    again = load(tmp_path / "again")
    assert again.capabilities == {"text-to-image", "inpaint"} and again.pipe.image_encoder is None
    assert png(again(["a cat"], [3], SETTINGS)[0]) == png(generator(["a cat"], [3], SETTINGS)[0])
    assert "variation" in generator.capabilities  # still loaded in the generator that saved
