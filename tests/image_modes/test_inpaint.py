"""`--mode inpaint`: the masked part is repainted, the rest is the source's own pixels.

The two meet over a feathered band centred on the mask edge (2 px at 64x64:
1 px on each side; ``masks.feathered_composite``), so "outside" below means
outside the mask grown by that 1 px (``grow(mask, BAND)``): pixels in the band
are a blend by design and were excluded when the composite became feathered.

Measured on the tiny model (2 + 2 steps, 64x64, 6 sources per kind, gradients
and noise): mean absolute difference to the fitted source, 0..255 scale,

    mask      outside (+ band)   inside the mask (per-image means)
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
    noise,
    parquet_images,
)

OUTSIDE_MAX = 1.0  # beyond the blend band; see the module docstring: compositing makes it 0, no compositing ~57..92
INSIDE_MIN = 20.0
BOX = re.compile(r"^(center|border|random-box): (repaints|keeps) box \((\d+),(\d+)\)-\((\d+),(\d+)\) of (\d+)x(\d+)$")

BAND = 1  # at 64x64 the band is 2 px (masks.feather_width): it reaches 1 px into the kept side


def grow(region: np.ndarray, px: int) -> np.ndarray:
    """``region`` grown by ``px`` pixels in every direction, diagonals included (a square neighbourhood)."""
    h, w = region.shape
    padded = np.pad(region, px)
    out = np.zeros_like(region)
    for dy in range(2 * px + 1):
        for dx in range(2 * px + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


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
        assert mean_abs_diff(output, source, ~grow(repaint, BAND)) < OUTSIDE_MAX
        assert mean_abs_diff(output, source, repaint) > INSIDE_MIN


@KINDS
def test_mask_column_describes_the_region_that_changed(masked_run, kind: str) -> None:
    out = masked_run(kind)
    images = parquet_images(out)
    for row in manifest(out):
        assert row["mask"].startswith(f"{kind}: ") and BOX.match(row["mask"]), row["mask"]
        stated = box_mask(row["mask"])
        changed = np.abs(np.asarray(images[row["id"]], dtype=int) - fitted_source(row["source_path"])).max(axis=-1) > 0
        assert not changed[~grow(stated, BAND)].any(), "nothing outside the stated box and its blend band changed"
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
    assert mean_abs_diff(output, source, ~grow(left, BAND)) < OUTSIDE_MAX
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
    assert mean_abs_diff(output, source, ~grow(repaint, BAND)) < OUTSIDE_MAX
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


# -- the feathered edge ----------------------------------------------------------------
#
# A hard binary composite leaves a rectangular seam (a 255-level jump between a black
# source and a white repaint) that a classifier can learn as a shortcut. The blend band
# is centred on the mask edge: half of it on each side.

def _right_part(size: tuple[int, int], edge: int) -> Image.Image:
    """A repaint mask: white from column ``edge`` on."""
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[:, edge:] = 255
    return Image.fromarray(mask)


def test_feather_width_is_about_3_percent_of_the_shorter_side_and_even() -> None:
    from dalle_data.masks import feather_width

    assert feather_width((64, 64)) == 2 * BAND == 2
    assert feather_width((32, 32)) == 2  # never less than one pixel on each side
    assert feather_width((512, 512)) == 16 and feather_width((1024, 768)) == 24
    assert all(feather_width((s, s)) % 2 == 0 for s in range(8, 2048, 37))


def test_feathered_composite_keeps_the_source_beyond_the_band_and_the_generator_deep_inside() -> None:
    from dalle_data.masks import feathered_composite

    source, generated = np.asarray(noise(1, (120, 40))), np.asarray(noise(2, (120, 40)))
    out = feathered_composite(Image.fromarray(generated), Image.fromarray(source), _right_part((120, 40), 60), 12)
    assert out.mode == "RGB" and out.size == (120, 40)
    out = np.asarray(out)
    assert np.array_equal(out[:, :54], source[:, :54]), "farther than 6 px outside the mask: the source's own"
    assert np.array_equal(out[:, 66:], generated[:, 66:]), "farther than 6 px inside it: the generator's own"
    band = out[:, 54:66].astype(int)
    assert (band != source[:, 54:66]).any() and (band != generated[:, 54:66]).any()


def test_feathered_composite_has_no_hard_seam_but_a_monotone_ramp() -> None:
    from dalle_data.masks import feathered_composite

    black, white = Image.new("RGB", (120, 40), (0, 0, 0)), Image.new("RGB", (120, 40), (255, 255, 255))
    row = np.asarray(feathered_composite(white, black, _right_part((120, 40), 60), 12))[20, :, 0].astype(int)
    steps = np.diff(row)
    assert (steps >= 0).all(), "monotone from the source to the generator"
    assert steps.max() <= 255 // 6, f"max step {steps.max()} vs a 255 jump with a hard composite"
    ramp = row[(row > 0) & (row < 255)]
    assert len(ramp) >= 10 and len(set(ramp)) >= 10, "many intermediate values"
    assert 0 < row[59] and row[60] < 255, "the ramp straddles the edge (columns 59 | 60)"
    odd = feathered_composite(white, black, _right_part((120, 40), 60), 11)
    assert odd.tobytes() == feathered_composite(white, black, _right_part((120, 40), 60), 12).tobytes(), "rounded up"
    hard = np.asarray(feathered_composite(white, black, _right_part((120, 40), 60), 0))[20, :, 0].astype(int)
    assert np.diff(hard).max() == 255 and set(hard) == {0, 255}, "feather 0 is the hard composite"


def test_feathered_composite_smooths_box_corners_and_is_deterministic() -> None:
    from dalle_data.masks import auto_mask, feathered_composite

    black, white = Image.new("RGB", (200, 200), (0, 0, 0)), Image.new("RGB", (200, 200), (255, 255, 255))
    mask = auto_mask("center", (200, 200), 0)[0]
    a = feathered_composite(white, black, mask)  # default band: 2 * round(0.015 * 200) = 6 px
    assert a.tobytes() == feathered_composite(white, black, mask).tobytes()
    out = np.asarray(a)[..., 0].astype(int)
    repaint = np.asarray(mask) > 127
    assert (out[~grow(repaint, 3)] == 0).all() and (out[~grow(~repaint, 3)] == 255).all()
    assert np.abs(np.diff(out, axis=0)).max() <= 255 // 3 and np.abs(np.diff(out, axis=1)).max() <= 255 // 3


def test_feathered_composite_resizes_generated_and_mask_to_the_source() -> None:
    from dalle_data.masks import feathered_composite

    source = noise(3, (80, 60))
    out = feathered_composite(noise(4, (64, 64)), source, _right_part((64, 64), 32), 4)
    assert out.size == (80, 60)
    # the mask, resized to 80x60 (nearest), repaints from column 40 on: 2 px of band on the kept side
    assert np.array_equal(np.asarray(out)[:, :38], np.asarray(source)[:, :38])


class _WhiteDecoder:
    """An inpainting decoder that paints everything white (so the composite's ramp is visible)."""

    components: dict = {}

    def to(self, device: str) -> "_WhiteDecoder":
        return self

    def set_progress_bar_config(self, **_: object) -> None:
        pass

    def __call__(self, *, width: int, height: int, **_: object):
        from types import SimpleNamespace

        return SimpleNamespace(images=np.ones((1, height, width, 3), dtype=np.float32))


def test_kandinsky_inpaint_feathers_the_mask_edge(tiny_generator) -> None:
    import dataclasses

    from dalle_data.generators.kandinsky import KandinskyGenerator
    from dalle_data.masks import auto_mask

    generator = KandinskyGenerator(tiny_generator.prior, tiny_generator.decoder, model="stub")
    generator.set_inpaint(_WhiteDecoder())
    settings = dataclasses.replace(tiny_generator.defaults, width=200, height=200, prior_num_inference_steps=2)
    mask = auto_mask("center", (200, 200), 0)[0]  # repaints (50,50)-(149,149)
    out = generator.inpaint([Image.new("RGB", (200, 200))], [mask], ["a cat"], [0], settings)[0]
    row = np.asarray(out)[100, :, 0].astype(int)
    assert (row[:47] == 0).all() and (row[53:147] == 255).all() and (row[153:] == 0).all()
    assert list(row[47:53]) == sorted(row[47:53]) and len(set(row[47:53])) == 6, "a 6-px ramp across the left edge"
    assert np.abs(np.diff(row)).max() <= 255 // 3
