"""FLOP-counted utilisation: each stage's FLOPs per image, its achieved rate, and the device's matmul limit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest


def small(settings):
    return dataclasses.replace(settings, num_inference_steps=3, prior_num_inference_steps=2, width=32, height=32)


def test_the_stages_count_every_flop_of_a_generator_call_and_leave_it_as_it_was(tiny_generator) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from dalle_data.generators.utilisation import StageMeter

    s = small(tiny_generator.defaults)
    with FlopCounterMode(display=False) as whole:
        tiny_generator(["a cat"] * 3, [1, 2, 3], s)
    with StageMeter(tiny_generator) as meter:
        tiny_generator(["a cat"] * 3, [1, 2, 3], s)
        counted = sum(c.flops for c in meter.counts.values())
        assert counted == whole.get_total_flops(), "the stages hold every FLOP of a call"
        tiny_generator(["a dog", "a cat"], [4, 5], s)  # another shape: counted once more
        shapes = sum(len(c.shapes) for c in meter.counts.values())
        before = sum(c.flops for c in meter.counts.values())
        tiny_generator(["a cat"] * 3, [6, 7, 8], s)  # a shape seen before: timed, not counted again
        assert sum(len(c.shapes) for c in meter.counts.values()) == shapes
        assert sum(c.flops for c in meter.counts.values()) - before == counted, "its FLOPs are the shape's count"
    assert meter.images == 8
    assert set(meter.counts) == {"prior", "denoiser", "image_decoder"}
    report = meter.report(limit=1e12)
    assert report["denoiser"]["calls"] == 9 and report["image_decoder"]["calls"] == 3
    assert all(row["gflop_per_image"] > 0 for row in report.values())
    assert all(row["gflop_per_s"] and 0 < row["share_of_limit"] for row in report.values()), \
        "the calls of a shape seen before give a rate"
    for modules in meter.modules.values():
        for module in modules:
            assert "forward" not in vars(module) and "decode" not in vars(module), "unwrapped on exit"


def test_the_matmul_limit_is_measured_once_per_device_and_dtype_and_remembered(tmp_path: Path) -> None:
    import torch

    from dalle_data.generators.utilisation import LIMIT_FILE, limit_key, practical_limit

    assert practical_limit("cpu", torch.float32, tmp_path, probe=False) is None
    first = practical_limit("cpu", torch.float32, tmp_path)
    assert first and first > 1e8, "a CPU does more than 0.1 GFLOP/s"
    saved = json.loads((tmp_path / LIMIT_FILE).read_text())
    assert saved[limit_key("cpu", torch.float32)] == pytest.approx(first, rel=1e-3)
    assert practical_limit("cpu", torch.float32, tmp_path, probe=False) == pytest.approx(first, rel=1e-3)


def test_a_run_prints_and_records_its_generators_utilisation(cli, tmp_path: Path) -> None:
    from tests.conftest import FAST

    out = tmp_path / "out"
    result = cli("generate", *FAST, "--classes", "cat", "--per-class", "2", "--filter", "none", "--out", out)
    assert result.exit_code == 0, result.stderr
    u = json.loads((out / "summary.json").read_text())["utilisation"]
    assert u["device"] == "cpu" and u["dtype"] == "float32" and u["images"] == 2 and u["limit_gflop_per_s"] > 0
    assert set(u["stages"]) == {"prior", "denoiser", "image_decoder"}
    assert "generator (cpu, float32, matmul limit" in result.stdout and "GFLOP/image" in result.stdout
