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
