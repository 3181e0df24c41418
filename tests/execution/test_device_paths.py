"""The accelerator code paths, exercised on the CPU: tensor outputs, tensor preprocessing, compiled models."""

from __future__ import annotations

import numpy as np
import pytest

from dalle_data.execution.stages import encode_png


@pytest.fixture(scope="module")
def tiny():
    from dalle_data.generators.tiny import build_tiny_generator

    return build_tiny_generator()


def test_tensor_outputs_make_the_same_png_bytes_as_the_host_path(tiny) -> None:
    from dalle_data.device_images import DeviceImage

    settings = tiny.defaults
    prompts, seeds = ["a cat", "a dog", "a boat"], [1, 2, 3]
    tiny.tensor_outputs = False
    host = tiny(prompts, seeds, settings)
    tiny.tensor_outputs = True
    try:
        device = tiny(prompts, seeds, settings)
    finally:
        tiny.tensor_outputs = False
    assert all(isinstance(d, DeviceImage) for d in device)
    assert [encode_png(h) for h in host] == [encode_png(d.to_pil()) for d in device]


def test_device_defects_match_the_host_check() -> None:
    import torch
    from PIL import Image

    from dalle_data.device_images import DeviceImage, tensor_defect
    from dalle_data.quality import image_defect

    rng = np.random.default_rng(0)
    cases = [np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), (200, 10, 10), np.uint8),
             rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), np.full((16, 16, 3), 7, np.uint8)]
    for array in cases:
        device = DeviceImage(torch.from_numpy(array).permute(2, 0, 1).contiguous())
        assert tensor_defect(device) == image_defect(Image.fromarray(array))


@pytest.mark.parametrize("name", ["tiny", "shapes-demo"])
def test_tensor_preprocessing_scores_like_the_pil_path(tiny, name: str) -> None:
    import torch

    from dalle_data.device_images import DeviceImage
    from dalle_data.scoring import load_scorer

    scorer = load_scorer(name)
    assert scorer.tensor_preprocess is not None
    scorer.set_labels(["cat", "dog", "red circle", "blue star"])
    images = tiny(["a cat", "a dog", "a red circle", "a blue star"], [5, 6, 7, 8], tiny.defaults)  # 64 px: resized
    device = [DeviceImage(torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous()) for im in images]
    prompts = ["a cat", "a dog", "a red circle", "a blue star"]
    a, b = scorer.score(images, prompts), scorer.score(device, prompts)
    assert np.allclose(a.clip_score, b.clip_score, atol=0.03), (a.clip_score, b.clip_score)
    assert np.allclose(a.probs, b.probs, atol=0.05)


def test_a_compiled_model_gets_every_batch_at_one_shape(tiny, monkeypatch) -> None:
    from dalle_data.execution.stages import BatchSize, generate
    from dalle_data.execution.plan import Unit
    from dalle_data.prompts import PromptItem

    class Spy:
        backend, model, defaults, compiled = "spy", "spy", tiny.defaults, True

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def __call__(self, prompt, seeds, settings):
            self.sizes.append(len(prompt))
            return tiny(prompt, seeds, settings)

    from tests.execution.test_pipeline import stages_for, setup

    the_plan, _ = setup()
    spy = Spy()
    stages = stages_for(the_plan, spy)
    stages.settings = tiny.defaults
    units = [Unit(("cat", "vanilla", 0), k, PromptItem("cat", "vanilla", f"a cat {k}", "t"), k) for k in range(3)]
    padded, _ = generate(stages, units, BatchSize(8))
    spy.compiled = False
    plain, _ = generate(stages, units, BatchSize(8))
    assert spy.sizes == [8, 3]  # padded to the batch size once compiled
    # the padding changes only the shape (within float noise: batch composition is not bitwise neutral on CPUs)
    for a, b in zip(padded, plain):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2


def parquet_images(out) -> dict:
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    rows = [r for p in sorted(out.glob("parquet/train/*.parquet")) for r in pq.read_table(p).to_pylist()]
    return {r["id"]: np.asarray(Image.open(io.BytesIO(r["image"]["bytes"]))) for r in rows}


@pytest.mark.slow
def test_compile_flag_runs_and_makes_the_same_images(tmp_path) -> None:
    import os
    import subprocess

    from tests.conftest import FAST
    from tests.warm_cli import dalle_data_command  # processes of their own, forked warm

    command, env = dalle_data_command({**os.environ, "HF_HUB_OFFLINE": "1",
                                       "DALLE_DATA_COMPILE_BACKEND": "eager"})  # inductor needs minutes
    outs = []
    for name, extra in (("plain", []), ("compiled", ["--compile"])):
        out = tmp_path / name
        result = subprocess.run([*command, "generate", *FAST, "--classes", "cat",
                                 "--per-class", "3", "--filter", "none", "--batch-size", "2", "--out", str(out),
                                 "--json", *extra], capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        outs.append(parquet_images(out))
    assert outs[0].keys() == outs[1].keys()  # the same records
    for key in outs[0]:  # the same pictures (within the float noise a padded batch brings)
        assert np.abs(outs[0][key].astype(np.int16) - outs[1][key].astype(np.int16)).max() <= 2


def test_bf16_weights_run_on_the_cpu(tmp_path, cli) -> None:
    from tests.conftest import FAST

    result = cli("generate", *FAST, "--classes", "cat", "--per-class", "2", "--filter", "none", "--dtype", "bf16",
                 "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 0, result.stderr
