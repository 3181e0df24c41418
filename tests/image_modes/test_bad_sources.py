"""Bad source images and misused flags: a failed record (the run goes on) or one clear line (nothing can run)."""

from __future__ import annotations

import io
import json
import struct
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import FAST
from tests.image_modes.helpers import (
    OUT_SIZE,
    cli,
    generate,
    gradient,
    make_tree,
    manifest,
    mean_abs_diff,
    noise,
    parquet_images,
)

BROKEN = {  # file name → what its record's error must say
    "text.png": "not an image PIL can read",
    "zero.png": "empty file (0 bytes)",
    "trunc.jpg": "truncated",
}
CONVERTED = ("gray.png", "palette.png", "rgba.png", "deep.png", "huge.jpg")


def _rgba(size: tuple[int, int] = (72, 56)) -> Image.Image:
    rgba = np.dstack([np.asarray(gradient(9, size)), np.full((size[1], size[0]), 255, dtype=np.uint8)])
    rgba[:, : size[0] // 2, 3] = 64  # left half mostly transparent
    return Image.fromarray(rgba, "RGBA")


def _deep(size: tuple[int, int] = (72, 56)) -> Image.Image:
    eight = np.asarray(gradient(5, size).convert("L"), dtype=np.uint16)
    return Image.fromarray(eight * 257)  # 16-bit (I;16), the full 0..65535 range


def expected_rgb(name: str) -> Image.Image:
    """What the 8-bit RGB conversion of each special source should be."""
    if name == "gray.png":
        return gradient(3).convert("L").convert("RGB")
    if name == "palette.png":
        return gradient(4).convert("P").convert("RGB")
    if name == "rgba.png":
        return Image.alpha_composite(Image.new("RGBA", (72, 56), (255, 255, 255, 255)), _rgba()).convert("RGB")
    if name == "deep.png":
        return gradient(5, (72, 56)).convert("L").convert("RGB")
    raise KeyError(name)


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "photos"
    cat = root / "cat"
    cat.mkdir(parents=True)
    noise(1).save(cat / "good0.png")
    noise(2).save(cat / "good1.png")
    (cat / "text.png").write_text("this is not a picture\n")
    (cat / "zero.png").write_bytes(b"")
    buf = io.BytesIO()
    noise(3, (96, 96)).save(buf, format="JPEG")
    (cat / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    gradient(3).convert("L").save(cat / "gray.png")
    gradient(4).convert("P").save(cat / "palette.png")
    _rgba().save(cat / "rgba.png")
    deep = _deep()
    assert deep.mode == "I;16"
    deep.save(cat / "deep.png")
    w, h = 5000, 4000  # 20 Mpx: decoded at reduced size (JPEG draft), never whole
    x, y = np.linspace(0, 255, w, dtype=np.float32)[None, :], np.linspace(0, 255, h, dtype=np.float32)[:, None]
    big = np.empty((h, w, 3), dtype=np.uint8)
    big[..., 0], big[..., 1], big[..., 2] = x, y, (x + y) / 2
    Image.fromarray(big).save(cat / "huge.jpg", quality=80)
    return root


@pytest.fixture(scope="module")
def bad_run(bad_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], Path]:
    out = tmp_path_factory.mktemp("badrun") / "out"
    # --max-attempts 20: 10 per mode, so each of the 10 sources is tried exactly once per mode
    summary = generate(out, "--mode", "variation=0.5,inpaint=0.5", "--from", bad_tree, "--per-source", "1",
                       "--max-attempts", "20", "--filter", "none")
    return summary, manifest(out), out


def test_the_run_goes_on_past_broken_sources(bad_run) -> None:
    summary, rows, _ = bad_run
    good = 10 - len(BROKEN)
    assert len(rows) == 2 * good + len(BROKEN)  # each good source once per mode, each broken one once
    assert summary["failed"] == len(BROKEN) and summary["kept"] == 2 * good
    assert summary["rejections"] == {"source-unreadable": len(BROKEN)}
    cat = summary["classes"]["cat"]
    assert cat["generated"] == cat["kept"] + cat["rejected"] + cat["failed"]  # the numbers add up
    assert summary["complete"] is True, "a broken source is no quota: --per-source counts usable sources"


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_source_is_one_failed_record_with_its_reason(bad_run, name: str) -> None:
    _, rows, _ = bad_run
    mine = [r for r in rows if Path(r["source_path"]).name == name]
    assert len(mine) == 1, "tried once per run, recorded once, never paired or attempted again"
    (row,) = mine
    assert row["status"] == "failed" and row["kept"] is False and row["reject_reason"] == "source-unreadable"
    assert row["shard"].startswith("r000-"), "found by the check before any generation"
    assert name in row["error"] and BROKEN[name] in row["error"], row["error"]


def test_broken_sources_cost_no_attempts_and_are_not_checked_again(bad_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = 10 - len(BROKEN)
    # exactly one attempt per usable source and mode: a broken source spending one would leave a quota short
    summary = generate(out, "--mode", "variation=0.5,inpaint=0.5", "--from", bad_tree, "--per-source", "1",
                       "--max-attempts", str(2 * good), "--filter", "none")
    assert summary["complete"] is True and summary["kept"] == 2 * good
    again = cli("generate", *FAST, "--resume", out, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["already_complete"] is True


@pytest.mark.parametrize("name", CONVERTED)
def test_unusual_formats_are_converted_and_succeed(bad_run, name: str) -> None:
    _, rows, _ = bad_run
    mine = [r for r in rows if Path(r["source_path"]).name == name]
    assert len(mine) == 2 and all(r["status"] == "kept" for r in mine), [r["error"] for r in mine]


@pytest.mark.parametrize("name", ["gray.png", "palette.png", "rgba.png", "deep.png"])
def test_conversion_to_rgb_keeps_the_picture(bad_run, name: str) -> None:
    """Inpainting keeps the source's pixels outside the (border) mask: they show how it was converted
    (grayscale replicated, transparency over white, 16 bits scaled down rather than clipped)."""
    from dalle_data.masks import auto_mask

    _, rows, out = bad_run
    row = next(r for r in rows if Path(r["source_path"]).name == name and r["mode"] == "inpaint")
    from tests.image_modes.test_inpaint import BAND, grow

    # outside the mask and its blend band (the feathered edge) the pixels are the source's own
    kept = ~grow(np.asarray(auto_mask("border", OUT_SIZE, row["seed"])[0]) > 127, BAND)
    expected = np.asarray(ImageOps.fit(expected_rgb(name), OUT_SIZE, method=Image.Resampling.BICUBIC))
    output = np.asarray(parquet_images(out)[row["id"]])
    assert mean_abs_diff(output, expected, kept) < 1.0


# -- one-line errors: nothing can run -------------------------------------------------

def test_empty_source_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = cli("generate", *FAST, "--mode", "variation", "--from", tmp_path / "empty", "--classes", "cat",
                 "--per-source", "1", "--out", out)
    assert_one_line_error(result, "no source images", str(tmp_path / "empty"))
    result = cli("generate", *FAST, "--mode", "variation", "--from", tmp_path / "empty", "--per-source", "1",
                 "--out", out)
    assert_one_line_error(result, str(tmp_path / "empty"))
    assert not out.exists()


def test_class_folders_without_images(tmp_path: Path) -> None:
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    (tmp_path / "photos" / "cat" / ".DS_Store").write_bytes(b"\0")
    result = cli("generate", *FAST, "--mode", "inpaint", "--from", tmp_path / "photos", "--per-source", "1",
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "no source images")
    assert not (tmp_path / "out").exists()


def test_from_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for extra in ([], ["--classes", "cat"]):
        result = cli("generate", *FAST, "--mode", "variation", "--from", missing, "--per-source", "1", *extra,
                     "--out", tmp_path / "out")
        assert_one_line_error(result, "--from", str(missing), "no such directory")
    assert not (tmp_path / "out").exists()


def test_per_source_with_text_modes_only(tmp_path: Path) -> None:
    result = cli("generate", *FAST, "--classes", "cat", "--per-source", "2", "--out", tmp_path / "out")
    assert_one_line_error(result, "--per-source", "image modes")
    result = cli("generate", *FAST, "--classes", "cat", "--mode", "vanilla,style", "--per-source", "2",
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "--per-source", "image modes")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["variation", "fuse", "inpaint", "vanilla=0.5,inpaint=0.5"])
def test_image_mode_without_from(tmp_path: Path, mode: str) -> None:
    result = cli("generate", *FAST, "--classes", "cat", "--mode", mode, "--per-class", "2", "--out", tmp_path / "out")
    assert_one_line_error(result, "--from")
    assert not (tmp_path / "out").exists()


# -- awkward class folder names ------------------------------------------------------

def test_awkward_class_folders_keep_their_label_and_get_safe_folders(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "photos", {"CON": 1, "my  cat": 1})
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    generate(out, "--mode", "variation", "--from", tree, "--per-source", "1", "--filter", "none",
             "--format", "parquet", "--format", "imagefolder")
    rows = manifest(out)
    assert {(r["label"], r["class_dir"]) for r in rows} == {("CON", "con_"), ("my  cat", "my_cat")}
    assert all(r["status"] == "kept" for r in rows)
    written = sorted(p.relative_to(out / "imagefolder" / "train").parent.as_posix()
                     for p in out.glob("imagefolder/train/*/*.png"))
    assert written == ["con_", "my_cat"]
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents}
    assert after == before, "nothing written (or changed) outside OUT, the sources included"


# -- known gaps (see the report) -------------------------------------------------------

def _decompression_bomb_png(path: Path, side: int = 20_000) -> None:
    """A valid 1x1 PNG whose header claims side x side pixels (what PIL's bomb check reads)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", side, side)
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(png))


def test_an_oversized_image_header_is_a_failed_record_not_a_crash(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "photos", {"cat": 1})
    _decompression_bomb_png(tree / "cat" / "bomb.png")
    out = tmp_path / "out"
    result = cli("generate", *FAST, "--mode", "variation", "--from", tree, "--per-source", "1",
                 "--max-attempts", "2", "--filter", "none", "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    bomb = [r for r in manifest(out) if r["source_path"].endswith("bomb.png")]
    assert len(bomb) == 1 and bomb[0]["status"] == "failed" and "bomb.png" in bomb[0]["error"]


def test_per_source_quota_is_per_source_when_another_source_is_broken(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "photos", {"cat": 3})
    (tree / "cat" / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    generate(out, "--mode", "variation", "--from", tree, "--per-source", "1", "--filter", "none")
    kept = [r["source_path"] for r in manifest(out) if r["status"] == "kept"]
    assert sorted(Path(p).name for p in kept) == ["img0.png", "img1.png", "img2.png"]


def test_mask_dir_that_does_not_exist_is_a_one_line_error(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "photos", {"cat": 2})
    out = tmp_path / "out"
    result = cli("generate", *FAST, "--mode", "inpaint", "--from", tree, "--mask-dir", tmp_path / "no-masks",
                 "--per-source", "1", "--out", out)
    assert_one_line_error(result, "--mask-dir")
    assert not out.exists()


@pytest.mark.parametrize("folder", [unicodedata.normalize("NFD", "café"), "dog "], ids=["nfd-unicode", "trailing-space"])
def test_class_folder_names_that_cleaning_changes_still_find_their_images(tmp_path: Path, folder: str) -> None:
    tree = make_tree(tmp_path / "photos", {folder: 1})  # macOS (HFS+) hands out names in NFD
    out = tmp_path / "out"
    result = cli("generate", *FAST, "--mode", "variation", "--from", tree, "--per-source", "1", "--filter", "none",
                 "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert [r["status"] for r in manifest(out)] == ["kept"]
