"""Large and 16-bit sources load at reduced size, with bounded memory and the right gray levels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalle_data.sources import MAX_SIDE, load_rgb

SIDE = 12_000  # 144 Mpx of 16-bit gray: 288 MB decoded; under MAX_PIXELS, so it must load
LEFT, RIGHT = 40_000, 1_000  # 16-bit levels of the two halves
PEAK_LIMIT_KIB = 1024 * 1024  # 1 GiB for the whole child process; one float64 copy alone is 1.1 GB

# The child's own peak: VmHWM, the high-water mark of its address space. (ru_maxrss would not do:
# on Linux it carries over the parent's peak through fork and exec, and pytest with torch is big.)
CHILD = """
import json, sys
from pathlib import Path
from dalle_data.sources import load_rgb

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

before = peak_kib()
im = load_rgb(Path(sys.argv[1]), None, "deep.png")
print(json.dumps({"mode": im.mode, "size": im.size, "left": im.getpixel((100, 100)),
                  "right": im.getpixel((im.width - 100, im.height - 100)), "before_kib": before,
                  "peak_kib": peak_kib()}))
"""


def to_8bit(level: int) -> int:
    """The 8-bit level a 16-bit level maps to: 0..65535 scaled to 0..255, rounded."""
    return round(level * 255 / 65535)


@pytest.fixture(scope="module")
def deep_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12000x12000 16-bit grayscale PNG: left half LEFT, right half RIGHT (1.3 MB on disk)."""
    path = tmp_path_factory.mktemp("large") / "deep.png"
    im = Image.new("I;16", (SIDE, SIDE), LEFT)
    im.paste(Image.new("I;16", (SIDE - SIDE // 2, SIDE), RIGHT), (SIDE // 2, 0))  # (paste(int) fills bytes)
    im.save(path, compress_level=1)
    del im
    with Image.open(path) as check:
        assert check.mode == "I;16" and check.size == (SIDE, SIDE)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc/self/status (VmHWM)")
def test_a_huge_16_bit_source_loads_with_bounded_memory(deep_png: Path) -> None:
    result = subprocess.run([sys.executable, "-c", CHILD, str(deep_png)], capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["mode"] == "RGB" and got["size"] == [MAX_SIDE, MAX_SIDE]
    assert got["left"] == [to_8bit(LEFT)] * 3 == [156] * 3
    assert got["right"] == [to_8bit(RIGHT)] * 3 == [4] * 3
    assert got["peak_kib"] < PEAK_LIMIT_KIB, f"peak RSS {got['peak_kib'] // 1024} MiB ({got['before_kib'] // 1024} before)"


def test_16_bit_levels_map_to_the_nearest_8_bit_level() -> None:
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    rgb = np.asarray(load_rgb(_png(Image.fromarray(levels)), None, "levels.png"))
    expected = np.round(levels.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert rgb.shape == (256, 256, 3)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)


def test_a_large_16_bit_source_holding_8_bit_levels_is_not_darkened() -> None:
    """Sharp 0/255 stripes, larger than MAX_SIDE: reducing them must not make them look 16-bit."""
    stripes = np.zeros((64, MAX_SIDE * 2 + 6), dtype=np.uint16)
    stripes[:, ::2] = 255
    stripes[:, : stripes.shape[1] // 2] = 255
    rgb = np.asarray(load_rgb(_png(Image.fromarray(stripes)), None, "stripes.png"))
    assert rgb.shape[1] == MAX_SIDE
    assert rgb[:, : MAX_SIDE // 2 - 4].min() == 255  # the solid half stays white, not 255/257 = 1
    assert 120 <= rgb[:, MAX_SIDE // 2 + 4 :].mean() <= 135  # the stripes average to mid gray


@pytest.mark.parametrize("mode", ["P", "PT", "1", "RGBA", "LA", "L", "RGB", "CMYK"])
def test_large_sources_of_every_mode_are_reduced_like_small_ones(mode: str) -> None:
    """Above MAX_SIDE a source is reduced before conversion; the picture must be the same as converting first."""
    w, h = MAX_SIDE + 400, 300
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    base = Image.fromarray(np.stack([x, y, (x + y) / 2], -1).round().astype(np.uint8))
    if mode in ("P", "PT"):
        src = base.quantize(64)
        if mode == "PT":
            src.info["transparency"] = 0
    elif mode in ("RGBA", "LA"):
        src = base.convert(mode[:-1])
        src.putalpha(Image.fromarray((y * 0 + np.linspace(0, 255, w)[None, :]).astype(np.uint8)))
    else:
        src = base.convert(mode)
    reference = _reference(src).resize((MAX_SIDE, round(h * MAX_SIDE / w)), Image.Resampling.BICUBIC)
    got = load_rgb(_png(src) if mode != "CMYK" else _tiff(src), None, f"{mode}.png")
    assert got.mode == "RGB" and got.size == reference.size
    diff = np.abs(np.asarray(got, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    # the same picture; only resampling order differs (a few values at sharp alpha edges, PT)
    assert diff.mean() < 0.5 and (diff > 2).mean() < 0.001, (diff.mean(), diff.max(), (diff > 2).mean())


def _reference(im: Image.Image) -> Image.Image:
    """The conversion as it was done before reducing: alpha over white, everything else to RGB."""
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(im.convert("RGB"), mask=im.convert("RGBA").getchannel("A"))
        return white
    return im.convert("RGB")


def _png(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _tiff(im: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="TIFF")
    return buf.getvalue()
