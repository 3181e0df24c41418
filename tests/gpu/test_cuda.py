"""CUDA paths: half precision and batching. Skipped where torch sees no GPU."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_tiny_pipeline_in_half_precision_on_cuda_makes_finite_images() -> None:
    from dalle_data.generators.kandinsky import KandinskyGenerator
    from dalle_data.generators.tiny import build_tiny_generator

    cpu = build_tiny_generator()
    gen = KandinskyGenerator(cpu.prior.to(dtype=torch.float16), cpu.decoder.to(dtype=torch.float16),
                             model="tiny", defaults=cpu.defaults, device="cuda")
    images = gen(["a cat"] * 8, list(range(8)), gen.defaults)
    assert len(images) == 8
    arrays = [np.asarray(im, dtype=np.float32) for im in images]
    assert all(np.isfinite(a).all() and a.std() > 0 for a in arrays)


def test_scorer_on_cuda_matches_cpu() -> None:
    from dalle_data.generators.tiny import build_tiny_generator
    from dalle_data.scoring import load_scorer

    images = build_tiny_generator()(["a cat", "a dog"], [1, 2], build_tiny_generator().defaults)
    cpu, gpu = load_scorer("tiny"), load_scorer("tiny", device="cuda")
    for scorer in (cpu, gpu):
        scorer.set_labels(["cat", "dog"])
    a, b = cpu.score(images, ["a cat", "a dog"]), gpu.score(images, ["a cat", "a dog"])
    assert np.allclose(a.clip_score, b.clip_score, atol=2e-2)


def test_decoder_output_stays_on_the_gpu_and_is_scored_there() -> None:
    from dalle_data.device_images import DeviceImage
    from dalle_data.generators import load_generator
    from dalle_data.scoring import load_scorer

    gen = load_generator("shapes-demo", device="cuda")
    assert gen.tensor_outputs
    images = gen(["a red circle", "a blue star"] * 4, list(range(8)), gen.defaults)
    assert all(isinstance(im, DeviceImage) and im.tensor.is_cuda for im in images)
    assert all(int(im.tensor.max()) > 8 for im in images)  # fp16 images are not black
    scorer = load_scorer("shapes-demo", device="cuda")
    scorer.set_labels(["red circle", "blue star"])
    scores = scorer.score(images, ["a red circle", "a blue star"] * 4)
    assert np.isfinite(scores.clip_score).all()


def test_unet_and_movq_are_channels_last_on_cuda() -> None:
    from dalle_data.generators import load_generator

    gen = load_generator("shapes-demo", device="cuda")
    weight = gen.decoder.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_compiled_denoisers_compile_once_for_every_batch() -> None:
    import torch._dynamo

    from dalle_data.execution.plan import Unit
    from dalle_data.execution.stages import BatchSize, Stages, generate
    from dalle_data.generators import load_generator
    from dalle_data.prompts import PromptItem
    from dalle_data.scoring.filters import ClipFilter

    gen = load_generator("shapes-demo", device="cuda")
    gen.compile()
    stages = Stages(gen, None, ClipFilter(), gen.defaults)  # type: ignore[arg-type]
    units = [Unit(("red circle", "vanilla", 0), k, PromptItem("red circle", "vanilla", "a red circle", "t"), k)
             for k in range(13)]
    torch._dynamo.utils.counters.clear()
    for start in range(0, 13, 4):  # 4, 4, 4, then 1 (padded to 4)
        generate(stages, units[start : start + 4], BatchSize(4))
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    generate(stages, units[:3], BatchSize(4))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames  # no recompile for a short batch
