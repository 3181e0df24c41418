"""Shared by the image-mode tests: synthetic source images, CLI runs, reading outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tests.conftest import FAST

OUT_SIZE = (64, 64)  # the tiny model's default output size


def noise(seed: int, size: tuple[int, int] = (72, 56)) -> Image.Image:
    """An RGB noise picture (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def gradient(seed: int, size: tuple[int, int] = (80, 60)) -> Image.Image:
    """A smooth RGB gradient: resampling barely changes it, so pixel comparisons are meaningful."""
    w, h = size
    x = np.linspace(0.0, 1.0, w)[None, :]
    y = np.linspace(0.0, 1.0, h)[:, None]
    phase = seed * 0.7
    channels = [np.broadcast_to((np.sin(3 * x + 2 * y + phase + c) + 1) * 127.5, (h, w)) for c in range(3)]
    return Image.fromarray(np.stack(channels, axis=-1).round().astype(np.uint8))


def make_tree(root: Path, counts: dict[str, int], maker=noise, suffix: str = ".png") -> Path:
    """An ImageFolder tree ``root/<class>/<i>.png`` with ``counts[class]`` images each."""
    seed = 0
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            seed += 1
            maker(seed).save(root / cls / f"img{i}{suffix}")
    return root


def cli(*args: object):
    """``dalle-data ARGS`` in-process (usable from module-scoped fixtures); returns the Click result."""
    from typer.testing import CliRunner

    from dalle_data.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def generate(out: Path, *args: object, quiet: bool = True):
    """A fast tiny-model generation into ``out``; asserts it exited 0."""
    result = cli("generate", *FAST, "--allow-short", "--out", out, *args, *(["--json"] if quiet else []))
    assert result.exit_code == 0, result.stderr + result.stdout
    return json.loads(result.stdout) if quiet else result


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def parquet_images(out: Path) -> dict[str, Image.Image]:
    """Kept images by record id, from OUT/parquet."""
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "parquet" / "train", columns=["id", "image"]).to_pylist()
    return {r["id"]: Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in rows}


def fitted_source(path: str | Path, size: tuple[int, int] = OUT_SIZE) -> np.ndarray:
    """The source as the generator saw it: RGB, ``ImageOps.fit(src, size, BICUBIC)`` (as ``sources.load_rgb``)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    return np.asarray(ImageOps.fit(rgb, size, method=Image.Resampling.BICUBIC), dtype=np.float64)


def mean_abs_diff(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Mean absolute difference (0..255) of two HxWx3 arrays over the pixels where ``where`` is true."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64))[where].mean())


def source_ids(root: Path, classes: list[str] | None = None) -> dict[str, list[str]]:
    """Source ids per class, sorted by id (the order planning uses)."""
    from dalle_data.discovery import discover_sources

    out: dict[str, list[str]] = {}
    for s in sorted(discover_sources(root, classes), key=lambda s: s.id):
        out.setdefault(s.label, []).append(s.id)
    return out
