"""The backend registry: options hashed into the spec, flags of one backend refused with another, the
default scorer and price model per backend, and a new backend added by one registration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dalle_data.backends import BACKENDS
from dalle_data.config import build_spec
from dalle_data.errors import SpecError
from tests.backends.toy_backend import CENT, TOY
from tests.conftest import FAST


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def spec(**values):  # noqa: ANN003, ANN201
    return build_spec({"classes": ["cat"], "per_class": 2, **values})


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setitem(BACKENDS, "toy", TOY)
    return TOY


def test_options_are_checked_against_the_backends_model() -> None:
    with pytest.raises(SpecError, match=r"unknown option 'tint' for --backend diffusers; it takes negative_prompt"):
        spec(options={"tint": 3})
    with pytest.raises(SpecError, match=r"--option ip_adapter_scale: .*less than or equal to 2"):
        spec(options={"ip_adapter": "default", "ip_adapter_scale": 5})
    with pytest.raises(SpecError, match="ip_adapter_scale needs ip_adapter"):
        spec(options={"ip_adapter_scale": 0.5})
    with pytest.raises(SpecError, match=r"unknown option 'negative_prompt' for --backend openai; it takes moderation"):
        spec(backend="openai", options={"negative_prompt": "x"})
    with pytest.raises(SpecError, match="options must be a mapping"):
        spec(options=["negative_prompt=x"])


def test_options_are_part_of_the_spec_hash_and_defaults_are_not() -> None:
    base = spec().spec_hash()
    assert spec(options={}).spec_hash() == base  # runs saved before options existed keep their hash
    assert spec(backend="openai", options={"moderation": "auto"}).options == {}  # a default is no option
    assert spec(backend="openai", options={"moderation": "auto"}).spec_hash() == spec(backend="openai").spec_hash()
    negative = spec(options={"negative_prompt": "blurry"})
    assert negative.spec_hash() != base
    assert negative.spec_hash() != spec(options={"negative_prompt": "text"}).spec_hash()
    assert spec(model="sdxl", options={"ip_adapter": "default", "ip_adapter_scale": "0.5"}).options == {
        "ip_adapter": "default", "ip_adapter_scale": 0.5}


def test_a_flag_of_another_backend_is_refused_naming_its_backend() -> None:
    with pytest.raises(SpecError, match="--quality applies to --backend openai"):
        spec(quality="high")
    with pytest.raises(SpecError, match="--openai-batch applies to --backend openai"):
        spec(openai_batch=True)
    for flag, value in (("steps", 3), ("prior_steps", 3), ("prior", "x/y")):
        with pytest.raises(SpecError, match=f"--{flag.replace('_', '-')} applies to --backend diffusers"):
            spec(backend="openai", **{flag: value})
    with pytest.raises(SpecError, match="unknown backend 'nope'; choose from diffusers, openai"):
        spec(backend="nope")


def test_each_backend_names_its_default_scorer() -> None:
    from dalle_data.scoring.registry import resolve_scorer_name

    assert resolve_scorer_name("auto", "tiny") == "tiny"
    assert resolve_scorer_name("auto", "shapes-demo", "diffusers") == "shapes-demo"
    assert resolve_scorer_name("auto", "sdxl-turbo", "diffusers") == "ViT-L-14/openai"
    assert resolve_scorer_name("auto", "gpt-image-1.5", "openai") == BACKENDS["openai"].default_scorer
    assert resolve_scorer_name("tiny", "gpt-image-1.5", "openai") == "tiny"


def test_option_flags_merge_over_the_config_files_options(cli, tmp_path: Path) -> None:
    config = tmp_path / "spec.yaml"
    config.write_text(yaml.safe_dump({"classes": ["cat"], "per_class": 2, "backend": "openai",
                                      "options": {"moderation": "low", "input_fidelity": "low"}}))
    result = cli("generate", "--config", config, "--option", "input_fidelity=high", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["options"] == {"moderation": "low", "input_fidelity": "high"}
    bad = cli("generate", "--classes", "cat", "--per-class", "2", "--option", "negative_prompt", "--dry-run")
    assert bad.exit_code == 2 and "--option expects KEY=VALUE" in bad.stderr and "Traceback" not in bad.stderr


def test_a_negative_prompt_changes_the_images_and_is_another_run(cli, tmp_path: Path) -> None:
    def run(out: Path, *extra: str):  # noqa: ANN202
        return cli("generate", *FAST, "--classes", "cat", "--per-class", "2", "--filter", "none", "--size", "32",
                   "--batch-size", "2", "--out", out, "--quiet", *extra)

    plain, negative = tmp_path / "plain", tmp_path / "negative"
    assert run(plain).exit_code == 0
    assert run(negative, "--option", "negative_prompt=blurry, low quality").exit_code == 0
    rows = {r["id"]: r for r in manifest(plain)}
    other = {r["id"]: r for r in manifest(negative)}
    assert rows.keys() == other.keys()
    assert all(rows[i]["sha256"] != other[i]["sha256"] for i in rows), "the negative prompt changed nothing"
    saved = yaml.safe_load((negative / "spec.yaml").read_text())
    assert saved["options"] == {"negative_prompt": "blurry, low quality"}
    again = run(negative, "--option", "negative_prompt=text")  # another option into the same OUT: another run
    assert again.exit_code == 2 and "holds a different run (options: {'negative_prompt': 'blurry, low quality'} there" in again.stderr


def test_an_option_the_model_cannot_take_is_one_line(cli, tmp_path: Path) -> None:
    result = cli("generate", *FAST, "--classes", "cat", "--per-class", "2", "--out", tmp_path / "o",
                 "--option", "ip_adapter=default")
    assert result.exit_code == 2 and "takes no IP-Adapter" in result.stderr and "Traceback" not in result.stderr


def test_a_new_backend_is_one_module_and_one_registration(toy, cli, tmp_path: Path) -> None:
    plan = cli("generate", "--backend", "toy", "--classes", "cat,dog", "--per-class", "3", "--dry-run", "--json")
    assert plan.exit_code == 0, plan.stderr
    report = json.loads(plan.stdout)
    assert report["model"] == "toy-1" and report["cost"]["expected"] == pytest.approx(6 * CENT)
    refused = cli("generate", "--backend", "toy", "--mode", "fuse", "--from", tmp_path, "--classes", "cat",
                  "--per-source", "1", "--out", tmp_path / "x")
    assert refused.exit_code == 2 and "the toy backend cannot do fuse; use --backend diffusers or openai" in refused.stderr
    out = tmp_path / "out"
    made = cli("generate", "--backend", "toy", "--classes", "cat,dog", "--per-class", "3", "--filter", "none",
               "--option", "tint=40", "--out", out, "--quiet")
    assert made.exit_code == 0, made.stderr
    rows = manifest(out)
    assert len(rows) == 6 and {r["backend"] for r in rows} == {"toy"} and {r["model"] for r in rows} == {"toy-1"}
    listed = cli("backends", "--backend", "toy", "--json")
    entry = json.loads(listed.stdout)[0]
    assert entry["options"][0]["name"] == "tint" and entry["modes"] == ["vanilla", "style", "adversarial"]
    assert entry["default_scorer"] == "tiny" and entry["price_basis"] == "One cent per image."


def test_backends_lists_every_registered_backend(cli) -> None:
    result = cli("backends", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows.keys() == BACKENDS.keys()
    assert {o["name"] for o in rows["diffusers"]["options"]} == {"negative_prompt", "ip_adapter", "ip_adapter_scale"}
    assert rows["openai"]["reproducible"] is False and "quality" in rows["openai"]["flags"]
    text = cli("backends").stdout
    assert "--option input_fidelity=...  (low | high | none, default None)" in text
    unknown = cli("backends", "--backend", "nope")
    assert unknown.exit_code == 2 and "unknown backend 'nope'" in unknown.stderr


def test_guidance_unset_means_the_models_own_and_hashes_as_the_old_default() -> None:
    from dalle_data.generators.registry import resolve_settings
    from dalle_data.generators.text2image import PRESETS

    assert spec().guidance_scale is None
    assert spec().spec_hash() == spec(guidance_scale=4.0).spec_hash()  # runs saved with 4.0 keep their hash
    assert spec(guidance_scale=7.0).spec_hash() != spec().spec_hash()
    turbo = PRESETS["sdxl-turbo"].defaults
    assert resolve_settings(spec(model="sdxl-turbo"), turbo).guidance_scale == 0.0
    assert resolve_settings(spec(model="sdxl-turbo", guidance_scale=2.0), turbo).guidance_scale == 2.0


def test_the_spec_checks_know_the_presets_traits() -> None:
    from dalle_data.backends import GUIDANCE_FREE_PRESETS, IP_ADAPTER_PRESETS
    from dalle_data.generators.ip_adapter import IP_ADAPTER_FAMILIES
    from dalle_data.generators.text2image import PRESETS

    assert GUIDANCE_FREE_PRESETS == {name for name, p in PRESETS.items() if p.defaults.guidance_scale <= 1}
    assert IP_ADAPTER_PRESETS == {name for name in PRESETS if name.startswith("sdxl")}
    assert "StableDiffusionXLPipeline" in IP_ADAPTER_FAMILIES
    with pytest.raises(SpecError, match="--option ip_adapter: flux-schnell takes no IP-Adapter"):
        spec(model="flux-schnell", options={"ip_adapter": "default"})
    with pytest.raises(SpecError, match="--option negative_prompt does nothing without guidance, and sdxl-turbo"):
        spec(model="sdxl-turbo", options={"negative_prompt": "blurry"})
    assert spec(model="sdxl-turbo", guidance_scale=2.0, options={"negative_prompt": "blurry"}).options
    with pytest.raises(SpecError, match="--option input_fidelity: gpt-image-1-mini does not take it"):
        spec(backend="openai", model="gpt-image-1-mini", options={"input_fidelity": "high"})


def test_option_spelling_and_values_from_a_spec_file(tmp_path: Path) -> None:
    from dalle_data.config import load_config

    assert spec(options={"negative-prompt": "x"}).options == {"negative_prompt": "x"}
    with pytest.raises(SpecError, match="ip_adapter_scale: Input should be a finite number"):
        spec(options={"ip_adapter": "default", "ip_adapter_scale": "nan"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes: [cat]\nper_class: 1\nbackend: [openai]\n")
    with pytest.raises(SpecError, match="backend"):
        build_spec(load_config(bad), source=f"config {bad}")


def test_a_negative_prompt_at_guidance_one_is_refused_when_the_model_loads(cli, tmp_path: Path) -> None:
    from dalle_data.generators.tiny_families import save_tiny

    folder = save_tiny("sd", tmp_path / "sd")
    result = cli("generate", "--model", folder, "--scorer", "tiny", "--classes", "cat", "--per-class", "1",
                 "--guidance-scale", "1", "--option", "negative_prompt=blurry", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "does nothing at guidance 1" in result.stderr and "Traceback" not in result.stderr


def test_kandinsky_variations_steer_away_from_the_negative_prompt() -> None:
    import numpy as np
    from PIL import Image

    from dalle_data.generators.registry import load_generator

    generator = load_generator("tiny")
    source = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    settings = generator.defaults

    def fuse() -> bytes:
        return generator.variation([[source, source]], [[0.5, 0.5]], [3], settings)[0].tobytes()

    plain = fuse()
    generator.set_negative_prompt("blurry")
    assert fuse() != plain and fuse() == fuse()


def test_offline_the_ip_adapter_is_named_with_the_missing_pieces(cli, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from dalle_data.generators.tiny_families import save_tiny
    from tests.image_modes.helpers import make_tree

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    folder = save_tiny("sdxl", tmp_path / "sdxl")
    make_tree(tmp_path / "photos", {"cat": 1})
    result = cli("generate", "--model", folder, "--scorer", "tiny", "--mode", "variation", "--from",
                 tmp_path / "photos", "--per-source", "1", "--option", "ip_adapter=default", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "not in the local cache" in result.stderr
    assert "IP-Adapter 'h94/IP-Adapter/sdxl_models/ip-adapter_sdxl.safetensors'" in result.stderr


def test_an_ip_adapter_for_a_model_folder_of_another_family_is_refused_before_it_loads(tmp_path: Path) -> None:
    from dalle_data.backends import IP_ADAPTER_PIPELINES
    from dalle_data.generators.ip_adapter import IP_ADAPTER_FAMILIES

    assert IP_ADAPTER_PIPELINES == set(IP_ADAPTER_FAMILIES)
    unclip = tmp_path / "unclip"
    unclip.mkdir()
    (unclip / "model_index.json").write_text('{"_class_name": "StableUnCLIPImg2ImgPipeline"}')
    with pytest.raises(SpecError, match=r"ip_adapter: .*unclip \(StableUnCLIPImg2ImgPipeline\) takes no IP-Adapter"):
        spec(model=str(unclip), options={"ip_adapter": "default"})
    sdxl = tmp_path / "sdxl"
    sdxl.mkdir()
    (sdxl / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    assert spec(model=str(sdxl), options={"ip_adapter": "default"}).options == {"ip_adapter": "default"}
