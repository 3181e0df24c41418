"""The shapes-demo training: deterministic, resumable by stage, loadable as `--model PATH`.

A few steps per stage on a small pool: this checks the recipe's plumbing and its
seeding, not the quality of the weights (benchmarks/shapes.py measures that).
"""

from __future__ import annotations

import logging
import shutil

import pytest

pytestmark = pytest.mark.slow


def _weights(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.safetensors")) if ".stages" not in p.parts}


def test_training_twice_gives_the_same_bytes_and_a_loadable_model(tmp_path, caplog) -> None:
    from dalle_data.demo.train import TrainConfig, train_all
    from dalle_data.generators import GenerationSettings
    from dalle_data.generators.registry import load_generator

    cfg = TrainConfig(pool=96, clip_steps=2, ae_steps=2, decoder_steps=2, prior_steps=2, inpaint_steps=2,
                      judge_steps=2, batch=4)
    train_all(tmp_path / "a", cfg)
    train_all(tmp_path / "b", cfg)
    first = _weights(tmp_path / "a")
    assert {p.parts[0] for p in first} == {"prior", "decoder", "inpaint", "judge.safetensors"}
    assert first == _weights(tmp_path / "b")

    # An interrupted training resumes from its finished stages and writes the same model.
    for part in ("prior", "decoder", "inpaint", "judge.safetensors"):
        target = tmp_path / "a" / part
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    with caplog.at_level(logging.INFO, logger="dalle_data.demo.train"):
        train_all(tmp_path / "a", cfg)
    assert sum("loaded from" in r.getMessage() for r in caplog.records) == 6
    assert _weights(tmp_path / "a") == first

    generator = load_generator(str(tmp_path / "a"))
    images = generator(["a red circle"], [0], GenerationSettings(32, 32, 2, 2))
    assert images[0].size == (32, 32)
