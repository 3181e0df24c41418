"""The tiny preset saved with save_pretrained and loaded back through --model PATH / --scorer PATH."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

FAST_STEPS = ["--steps", "2", "--prior-steps", "2"]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from dalle_data.generators import load_generator
    from dalle_data.scoring import load_scorer
    from dalle_data.scoring.registry import save_scorer

    root = tmp_path_factory.mktemp("models")
    load_generator("tiny").save_pretrained(root / "gen")
    save_scorer(load_scorer("tiny"), root / "clip")
    return root / "gen", root / "clip"


def test_saved_model_dir_has_the_diffusers_layout(saved_models: tuple[Path, Path]) -> None:
    gen, clip = saved_models
    assert json.loads((gen / "prior" / "model_index.json").read_text())["_class_name"] == "KandinskyV22PriorPipeline"
    assert json.loads((gen / "decoder" / "model_index.json").read_text())["_class_name"] == "KandinskyV22Pipeline"
    assert list((gen / "decoder" / "unet").glob("*.safetensors"))
    assert (clip / "open_clip_config.json").is_file() and (clip / "open_clip_model.safetensors").is_file()


def test_model_path_round_trip_gives_the_same_dataset(saved_models: tuple[Path, Path], tmp_path: Path, cli) -> None:
    gen, clip = saved_models
    # one batch size for both (auto probes each model anew, and a busy machine can pick two different ones:
    # the last bit of a pixel may then differ)
    common = ["generate", *FAST_STEPS, "--classes", "cat,dog", "--per-class", "2", "--max-attempts", "6", "--quiet",
              "--allow-short", "--batch-size", "2"]
    assert cli(*common, "--model", "tiny", "--scorer", "tiny", "--out", tmp_path / "preset").exit_code == 0
    result = cli(*common, "--model", gen, "--scorer", clip, "--out", tmp_path / "path")
    assert result.exit_code == 0, result.stderr

    def rows(name: str) -> list[tuple]:
        table = pq.read_table(tmp_path / name / "parquet" / "train").to_pylist()
        return sorted((r["seed"], r["prompt"], r["image"]["bytes"], r["clip_score"], r["kept"]) for r in table)

    assert rows("preset") == rows("path")
    assert json.loads((tmp_path / "path" / "summary.json").read_text())["model"] == str(gen)


def test_model_dir_without_prior_and_decoder_is_rejected(tmp_path: Path, cli) -> None:
    (tmp_path / "m").mkdir()
    result = cli("generate", "--classes", "cat", "--per-class", "1", "--model", tmp_path / "m", "--scorer", "tiny",
                 "--out", tmp_path / "o")
    assert result.exit_code != 0 and "prior/ and decoder/" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("width", 0, "16"), ("height", 5000, "4096"), ("width", "big", "integer"), ("num_inference_steps", -3, "0"),
    ("num_inference_steps", 2.5, "integer"), ("prior_num_inference_steps", 1, "2"), ("guidance_scale", 99, "50"),
    ("prior_guidance_scale", -1, "0"), ("width", None, "needed"),
])
def test_a_model_folders_defaults_out_of_the_flags_range_are_refused(saved_models: tuple[Path, Path], tmp_path: Path,
                                                                     cli, field: str, value, needle: str) -> None:
    import shutil

    gen = shutil.copytree(saved_models[0], tmp_path / "gen")
    card = json.loads((gen / "dalle_data_model.json").read_text())
    card["defaults"][field] = value
    (gen / "dalle_data_model.json").write_text(json.dumps(card))
    result = cli("generate", "--classes", "cat", "--per-class", "1", "--model", gen, "--scorer", "tiny",
                 "--filter", "none", "--batch-size", "2", "--out", tmp_path / "o")
    assert result.exit_code == 2, result.stdout
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "internal error" not in line, line
    assert str(gen / "dalle_data_model.json") in line and f"defaults.{field}" in line and needle in line, line
    assert not (tmp_path / "o").exists()


def test_tiny_generator_is_batch_and_call_deterministic(tiny_generator) -> None:
    import numpy as np

    settings = tiny_generator.defaults
    a = tiny_generator(["a cat", "a dog", "a car"], [1, 2, 3], settings)
    b = tiny_generator(["a dog"], [2], settings)
    assert a[0].size == (64, 64)
    diff = np.abs(np.asarray(a[1], dtype=int) - np.asarray(b[0], dtype=int))
    assert diff.max() <= 2, "an image should not depend on its batch neighbours beyond float noise"
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))
