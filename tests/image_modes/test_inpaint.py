"""`--mode inpaint`: the masked part is repainted, the rest is the source's own pixels.

Measured on the tiny model (2 + 2 steps, 64x64, 6 sources per kind, gradients
and noise): mean absolute difference to the fitted source, 0..255 scale,

    mask      outside the mask   inside the mask (per-image means)
    center    0.0                84..123 (gradients), 89..99 (noise)
    border    0.0                89..108 (gradients), 76..81 (noise)

and the inpainting decoder called directly, WITHOUT the compositing step,
differs from the source outside the mask by 58 (noise, center) to 92
(gradients, border) on average: its random MoVQ round trip reconstructs
nothing (a real one still blurs). Kept pixels are therefore copied from the
source after decoding (``KandinskyGenerator.inpaint``) and written losslessly
(PNG), so the outside difference is exactly 0. The tests allow < 1.0 (less
than one grey level on average, far below what the raw decoder gives) and ask
for > 20 inside.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.image_modes.helpers import (
    OUT_SIZE,
    fitted_source,
    generate,
    gradient,
    make_tree,
    manifest,
    mean_abs_diff,
    parquet_images,
)

OUTSIDE_MAX = 1.0  # see the module docstring: compositing makes it 0, no compositing ~57..92
INSIDE_MIN = 20.0
BOX = re.compile(r"^(center|border|random-box): (repaints|keeps) box \((\d+),(\d+)\)-\((\d+),(\d+)\) of (\d+)x(\d+)$")


def box_mask(desc: str) -> np.ndarray:
    """The repaint region (True) that a record's ``mask`` description states."""
    _, verb, x0, y0, x1, y1, w, h = BOX.match(desc).groups()
    inside = np.zeros((int(h), int(w)), dtype=bool)
    inside[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
    return inside if verb == "repaints" else ~inside


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Gradients at 80x60: not the output size, so the fit (crop + resize) is exercised too.
    return make_tree(tmp_path_factory.mktemp("src") / "photos", {"cat": 2, "dog": 2}, maker=gradient)


@pytest.fixture(scope="module")
def masked_run(tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """``masked_run(kind)``: the output directory of an inpainting run with ``--mask kind`` (made once)."""
    runs: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in runs:
            out = tmp_path_factory.mktemp(kind) / "out"
            generate(out, "--mode", "inpaint", "--from", tree, "--mask", kind, "--per-source", "1", "--filter", "none")
            runs[kind] = out
        return runs[kind]

    return get


KINDS = pytest.mark.parametrize("kind", ["center", "border", "random-box"])


@KINDS
def test_outside_the_mask_is_the_source_inside_is_repainted(masked_run, kind: str) -> None:
    from dalle_data.masks import auto_mask

    out = masked_run(kind)
    images = parquet_images(out)
    rows = manifest(out)
    assert len(rows) == 4 and all(r["status"] == "kept" and r["mode"] == "inpaint" for r in rows)
    for row in rows:
        repaint = np.asarray(auto_mask(kind, OUT_SIZE, row["seed"])[0]) > 127
        output = np.asarray(images[row["id"]], dtype=np.float64)
        source = fitted_source(row["source_path"])
        assert mean_abs_diff(output, source, ~repaint) < OUTSIDE_MAX
        assert mean_abs_diff(output, source, repaint) > INSIDE_MIN


@KINDS
def test_mask_column_describes_the_region_that_changed(masked_run, kind: str) -> None:
    out = masked_run(kind)
    images = parquet_images(out)
    for row in manifest(out):
        assert row["mask"].startswith(f"{kind}: ") and BOX.match(row["mask"]), row["mask"]
        stated = box_mask(row["mask"])
        changed = np.abs(np.asarray(images[row["id"]], dtype=int) - fitted_source(row["source_path"])).max(axis=-1) > 0
        assert not changed[~stated].any(), "nothing outside the stated box changed"
        assert changed[stated].mean() > 0.9, "nearly everything inside it did"


def test_center_mask_description() -> None:
    from dalle_data.masks import auto_mask

    assert auto_mask("center", (64, 64), 0)[1] == "center: repaints box (16,16)-(47,47) of 64x64"
    assert auto_mask("border", (64, 64), 0)[1] == "border: keeps box (13,13)-(50,50) of 64x64"


def test_random_box_in_a_run_is_the_one_its_seed_makes(masked_run) -> None:
    from dalle_data.masks import auto_mask

    rows = manifest(masked_run("random-box"))
    assert [r["mask"] for r in rows] == [auto_mask("random-box", OUT_SIZE, r["seed"])[1] for r in rows]
    assert len({r["mask"] for r in rows}) > 1, "each unit gets its own box"


@pytest.mark.parametrize("size", [(64, 64), (512, 512), (96, 80)])
def test_auto_mask_areas_are_as_documented(size: tuple[int, int]) -> None:
    from dalle_data.masks import auto_mask

    def repainted(kind: str, seed: int = 0) -> float:
        return float((np.asarray(auto_mask(kind, size, seed)[0]) == 255).mean())

    assert repainted("center") == pytest.approx(0.25, abs=0.01)  # half the width x half the height
    assert repainted("border") == pytest.approx(0.64, abs=0.01)  # all but a 60% x 60% box
    w, h = size
    for seed in range(40):  # sides between 30% and 60%: 9%..36% of the area
        mask = np.asarray(auto_mask("random-box", size, seed)[0]) == 255
        rows, cols = np.nonzero(mask)
        bw, bh = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
        assert mask.sum() == bw * bh, "one box"
        assert round(0.3 * w) <= bw <= round(0.6 * w) and round(0.3 * h) <= bh <= round(0.6 * h)
        assert 0.09 - 0.01 <= mask.mean() <= 0.36 + 0.01


def test_random_box_is_deterministic_per_seed() -> None:
    from dalle_data.masks import auto_mask

    a, b = auto_mask("random-box", (64, 64), 7), auto_mask("random-box", (64, 64), 7)
    assert a[1] == b[1] and a[0].tobytes() == b[0].tobytes()
    assert len({auto_mask("random-box", (64, 64), s)[1] for s in range(20)}) > 10


# -- --mask-dir ----------------------------------------------------------------------

class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def mask_dir_run(tmp_path_factory: pytest.TempPathFactory, tiny_generator, tiny_scorer):
    """Five sources: a good mask, a smaller mask (other suffix), no mask, an all-black and an all-white one."""
    from dalle_data.config import build_spec
    from dalle_data.job import run_generate

    base = tmp_path_factory.mktemp("maskdir")
    src, masks = base / "photos" / "cat", base / "masks" / "cat"
    src.mkdir(parents=True)
    masks.mkdir(parents=True)
    gradient(1, (64, 64)).save(src / "good.png")
    gradient(2, (80, 60)).save(src / "small.jpg", quality=95)
    for name, seed in (("missing", 3), ("black", 4), ("white", 5)):
        gradient(seed, (64, 64)).save(src / f"{name}.png")
    left_half = np.zeros((64, 64), dtype=np.uint8)
    left_half[:, :32] = 255
    Image.fromarray(left_half).save(masks / "good.png")
    left = np.zeros((30, 40), dtype=np.uint8)
    left[:, :16] = 255  # the left 40%: the crop of the 80x60 source to a square changes how much of it is left
    Image.fromarray(left).save(masks / "small.png")  # same stem, another suffix, another size
    Image.new("L", (64, 64), 0).save(masks / "black.png")
    Image.new("L", (64, 64), 255).save(masks / "white.png")
    out = base / "out"
    spec = build_spec({
        "classes": ["cat"], "modes": ["inpaint"], "from_dir": str(base / "photos"), "mask_dir": str(base / "masks"),
        "per_source": 1, "max_attempts": 5, "filter": "none", "model": "tiny", "steps": 2, "prior_steps": 2,
        "out": out, "formats": ["parquet"],
    })
    handler = _Collect()
    logger = logging.getLogger("dalle_data.masks")
    logger.addHandler(handler)
    try:
        summary = run_generate(spec, quiet=True, generator=tiny_generator, scorer=tiny_scorer)
    finally:
        logger.removeHandler(handler)
    by_name = {Path(r["source_path"]).stem: r for r in manifest(out)}
    return summary, by_name, handler.messages, base


def test_mask_files_with_the_same_relative_path_and_stem_are_used(mask_dir_run) -> None:
    _, rows, _, base = mask_dir_run
    images = parquet_images(base / "out")
    for name in ("good", "small"):
        row = rows[name]
        assert row["status"] == "kept", row["error"]
        assert row["mask"] == f"file: {base / 'masks' / 'cat' / (name + '.png')}"
    # the good mask repaints the left half: the right half is the source's own pixels
    output = np.asarray(images[rows["good"]["id"]], dtype=np.float64)
    source = np.asarray(Image.open(rows["good"]["source_path"]).convert("RGB"), dtype=np.float64)
    left = np.zeros((64, 64), dtype=bool)
    left[:, :32] = True
    assert mean_abs_diff(output, source, ~left) < OUTSIDE_MAX
    assert mean_abs_diff(output, source, left) > INSIDE_MIN


def test_a_mask_of_another_size_is_resized_with_a_warning(mask_dir_run) -> None:
    _, rows, warnings, base = mask_dir_run
    assert any("small.png is 40x30, its image 80x60: resizing the mask" in m for m in warnings), warnings
    row = rows["small"]
    # the resized mask decides what was kept, cropped and scaled exactly like its source (nearest-neighbour)
    mask = Image.open(base / "masks" / "cat" / "small.png").resize((80, 60), Image.Resampling.NEAREST)
    repaint = np.asarray(ImageOps.fit(mask, OUT_SIZE, method=Image.Resampling.NEAREST)) > 127
    assert 0.3 < repaint.mean() < 0.5
    output = np.asarray(parquet_images(base / "out")[row["id"]], dtype=np.float64)
    source = fitted_source(row["source_path"])
    assert mean_abs_diff(output, source, ~repaint) < OUTSIDE_MAX
    assert mean_abs_diff(output, source, repaint) > INSIDE_MIN


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        ("missing", ["no mask for", "missing.png"]),
        ("black", ["black.png", "all black", "nothing to repaint"]),
        ("white", ["white.png", "all white", "nothing would be kept"]),
    ],
)
def test_unusable_masks_fail_their_unit_with_the_reason(mask_dir_run, name: str, needles: list[str]) -> None:
    summary, rows, _, _ = mask_dir_run
    row = rows[name]
    assert row["status"] == "failed" and row["kept"] is False
    for needle in needles:
        assert needle in row["error"], row["error"]
    assert summary["failed"] == 3 and summary["kept"] == 2, "the run went on with the usable sources"
