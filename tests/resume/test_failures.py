"""Bad images, out-of-memory and a full disk: recorded, recovered, never corrupting the run."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalle_data.config import build_spec
from dalle_data.errors import OutputDirError
from dalle_data.generators.base import Defect, GenerationSettings
from dalle_data.job import run_generate
from dalle_data.quality import image_defect

SETTINGS = GenerationSettings(width=16, height=16, num_inference_steps=1, prior_num_inference_steps=1)


class StubGenerator:
    """Noise images; seeds listed in ``black`` / ``nan`` come out broken (this stub serves the detector tests)."""

    backend = "stub"
    model = "stub"
    defaults = SETTINGS

    def __init__(self, black: int = 0, nan: int = 0, oom_above: int | None = None) -> None:
        self.black, self.nan, self.oom_above = black, nan, oom_above
        self.batches: list[int] = []
        self.calls = 0

    def __call__(self, prompt: Sequence[str], seeds: Sequence[int], settings: GenerationSettings):
        if self.oom_above is not None and len(prompt) > self.oom_above:
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.batches.append(len(prompt))
        out = []
        for seed in seeds:
            self.calls += 1
            if self.calls <= self.black:
                out.append(Image.new("RGB", (16, 16)))
            elif self.calls <= self.black + self.nan:
                out.append(Defect("non-finite values in the decoder output (fp16 overflow?)"))
            else:
                rng = np.random.default_rng(seed % 2**32)
                out.append(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)))
        return out


def spec(out: Path, **kw):
    return build_spec({"classes": ["cat", "dog"], "per_class": 3, "filter": "none", "out": out,
                       "formats": ["parquet", "imagefolder"], "batch_size": 4, "shard_size": 4, **kw})


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("image", "reason"),
    [(Image.new("RGB", (8, 8)), "black image"), (Image.new("RGB", (8, 8), (120, 30, 200)), "constant image"),
     (Image.new("L", (8, 8), 3), "black image")],
)
def test_detector_names_the_defect(image: Image.Image, reason: str) -> None:
    assert image_defect(image).startswith(reason)


def test_detector_passes_dark_but_real_images() -> None:
    rng = np.random.default_rng(0)
    dark = Image.fromarray(rng.integers(0, 40, (8, 8, 3), dtype=np.uint8))
    assert image_defect(dark) is None


def test_black_and_nan_images_are_failed_and_replaced_with_new_seeds(tmp_path: Path, tiny_scorer) -> None:
    gen = StubGenerator(black=2, nan=1)
    summary = run_generate(spec(tmp_path / "o"), generator=gen, scorer=tiny_scorer)
    rows = manifest(tmp_path / "o")
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["error"] for r in failed] == ["black image", "black image",
                                            "non-finite values in the decoder output (fp16 overflow?)"]
    assert all(r["image"] is None if "image" in r else True for r in failed)
    assert summary["complete"] and summary["kept"] == 6 and summary["failed"] == 3
    kept_seeds = {r["seed"] for r in rows if r["status"] == "kept"}
    assert kept_seeds.isdisjoint(r["seed"] for r in failed), "replacements use new seeds"
    assert not any(r["id"] in {f["id"] for f in failed}
                   for r in (json.loads(x) for x in (tmp_path / "o" / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines()))


def test_failures_count_against_the_attempt_budget(tmp_path: Path, tiny_scorer) -> None:
    summary = run_generate(spec(tmp_path / "o", max_attempts=3, per_class=3), generator=StubGenerator(black=100),
                           scorer=tiny_scorer)
    assert not summary["complete"] and summary["generated"] == 6 and summary["failed"] == 6


def test_out_of_memory_halves_the_batch_and_logs_it(tmp_path: Path, tiny_scorer, caplog) -> None:
    gen = StubGenerator(oom_above=1)
    with caplog.at_level(logging.WARNING, logger="dalle_data.execution.stages"):
        summary = run_generate(spec(tmp_path / "o"), generator=gen, scorer=tiny_scorer)
    assert summary["complete"] and summary["kept"] == 6
    assert set(gen.batches) == {1} and summary["batch_size"] == 1
    assert "out of memory at batch size 4; retrying as batches of 2" in caplog.text
    assert "out of memory at batch size 2; retrying as batches of 1" in caplog.text


def test_out_of_memory_at_batch_size_one_is_a_clear_error(tmp_path: Path, tiny_scorer) -> None:
    from dalle_data.errors import DalleDataError

    with pytest.raises(DalleDataError, match="out of GPU memory at batch size 1"):
        run_generate(spec(tmp_path / "o"), generator=StubGenerator(oom_above=0), scorer=tiny_scorer)


def test_disk_full_stops_cleanly_and_a_rerun_completes(tmp_path: Path, tiny_scorer, monkeypatch) -> None:
    from dalle_data.writers import imagefolder

    reference = tmp_path / "ref"
    run_generate(spec(reference), generator=StubGenerator(), scorer=tiny_scorer)

    real_write = imagefolder.atomic_write_bytes
    calls = {"n": 0}

    def full_disk(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 5:  # the sixth image finds the disk full
            from dalle_data.writers.base import disk_error

            raise disk_error(path, OSError(errno.ENOSPC, "No space left on device"))
        real_write(path, data)

    out = tmp_path / "o"
    monkeypatch.setattr(imagefolder, "atomic_write_bytes", full_disk)
    with pytest.raises(OutputDirError, match="No space left on device; free up disk space"):
        run_generate(spec(out), generator=StubGenerator(), scorer=tiny_scorer)
    assert len(list((out / "shards").glob("*.jsonl"))) == 1, "the finished shard stays finished"
    assert not (out / "_SUCCESS").exists() and not list(out.rglob(".tmp-*"))
    assert json.loads((out / "runlog.jsonl").read_text().splitlines()[-1])["status"] == "failed"

    monkeypatch.setattr(imagefolder, "atomic_write_bytes", real_write)  # space freed
    summary = run_generate(spec(out), generator=StubGenerator(), scorer=tiny_scorer)
    assert summary["shards_resumed"] == 1 and summary["complete"]
    ref_rows = [(r["id"], r["status"]) for r in manifest(reference)]
    assert [(r["id"], r["status"]) for r in manifest(out)] == ref_rows
    pngs = lambda root: {p.relative_to(root): p.read_bytes() for p in root.glob("imagefolder/train/*/*.png")}  # noqa: E731
    assert pngs(out) == pngs(reference)


def test_overwrite_starts_over_but_never_deletes_foreign_files(tmp_path: Path, tiny_scorer) -> None:
    out = tmp_path / "o"
    run_generate(spec(out), generator=StubGenerator(), scorer=tiny_scorer)
    (out / "notes.txt").write_text("mine")
    summary = run_generate(spec(out, seed=5), generator=StubGenerator(), scorer=tiny_scorer, overwrite=True)
    assert summary["complete"] and "already_complete" not in summary
    assert (out / "notes.txt").read_text() == "mine"
    assert len((out / "runlog.jsonl").read_text().splitlines()) == 2  # the old log went with the old run
