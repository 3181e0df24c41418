"""Source images for the image-driven modes (variation, fuse, inpaint): one picture and how it is opened.

Which pictures ``--from DIR`` names is ``dalle_data.discovery``'s (it reads
earlier runs, so it sits above the run directory; this module sits below it).
Discovery only lists files (cheap, done while planning); images are opened
when a unit needs them, one at a time, so memory stays bounded. A file that
cannot be used (not an image, empty, truncated) becomes a ``failed`` record
with the reason, never a crash. Grayscale, palette, RGBA (composited on
white) and 16-bit images are converted to 8-bit RGB; images larger than
``MAX_SIDE`` are reduced on load.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MAX_SIDE = 2048  # larger sources are reduced on load: decoding stays memory-bounded
MAX_PIXELS = 16_384 * 16_384  # refuse anything bigger outright (a decompression bomb)


class SourceError(Exception):
    """A source image cannot be used; the message is the record's ``error``, ``code`` its reason code."""

    def __init__(self, message: str, code: str = "source-unreadable") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Source:
    """One source image: where it is, its class, and a stable id."""

    id: str
    label: str
    path: str  # file path, or "<parquet file>#<row id>" for a dalle-data Parquet output
    data: bytes | None = None  # image bytes when they come from Parquet

    def open(self, size: tuple[int, int] | None = None) -> Image:
        """The image as 8-bit RGB (resized to ``size`` if given); raises ``SourceError``."""
        return load_rgb(self.data if self.data is not None else Path(self.path), size, self.path)


def load_rgb(src: Path | bytes, size: tuple[int, int] | None, name: str) -> Image:
    """The image as 8-bit RGB, at most ``MAX_SIDE`` a side (resized to ``size`` if given); raises ``SourceError``.

    Memory stays near one decoded copy of the file: JPEGs are decoded at reduced size, anything
    else larger than ``MAX_SIDE`` is reduced before its mode is converted (a 12000x12000 16-bit
    PNG peaks at about 0.4 GB instead of 4 GB).
    """
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    try:
        if isinstance(src, Path) and src.stat().st_size == 0:
            raise SourceError(f"{name}: empty file (0 bytes)")
        with PILImage.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            if im.width * im.height > MAX_PIXELS:
                raise SourceError(f"{name}: {im.width}x{im.height} is too large to be an image source")
            if max(im.size) > MAX_SIDE:
                im.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at reduced size
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # copies only when the EXIF says to turn it
            peak = _peak(im) if im.mode in _WIDE_GRAY else None  # before reducing: resampling overshoots
            rgb = _to_rgb(_shrink(im), peak)
    except SourceError:
        raise
    except PILImage.DecompressionBombError:
        raise SourceError(f"{name}: too many pixels to be an image source (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        reason = "not an image PIL can read" if isinstance(err, UnidentifiedImageError) else str(err).split("\n")[0]
        raise SourceError(f"{name}: {reason}") from None
    if size is not None and rgb.size != size:
        rgb = ImageOps.fit(rgb, size, method=PILImage.Resampling.BICUBIC)
    return rgb


_WIDE_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16/32-bit grayscale


def _peak(im: Image) -> int:
    """The highest level of a 16/32-bit grayscale image, read in strips (no full-size copy)."""
    import numpy as np

    rows = max(1, (1 << 22) // max(1, im.width))  # about 4 Mpx a strip
    return max(int(np.asarray(im.crop((0, top, im.width, min(im.height, top + rows)))).max())
               for top in range(0, im.height, rows))


def _shrink(im: Image) -> Image:
    """``im`` fitted in ``MAX_SIDE`` x ``MAX_SIDE`` (bicubic, aspect kept, in place when its mode is kept),
    before any mode conversion.

    Palette and 1-bit images are expanded first (resampling palette indices would be wrong); every
    other mode, 16-bit gray included, is resampled as it is, so no full-size converted copy is made.
    """
    from PIL import Image as PILImage

    if max(im.size) <= MAX_SIDE:
        return im
    if im.mode == "1":
        im = im.convert("L")
    elif im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    # Image.reduce (the first, box-filter step of a thumbnail) has no 16-bit modes: resample in one step.
    gap = None if im.mode.startswith("I;16") else 2.0
    im.thumbnail((MAX_SIDE, MAX_SIDE), PILImage.Resampling.BICUBIC, reducing_gap=gap)
    return im


def _to_rgb(im: Image, peak: int | None = None) -> Image:
    """8-bit RGB: alpha composited on white; 16/32-bit gray scaled from 0..65535 (``peak``: its highest
    level before reducing; up to 255 means 8-bit levels stored wide, kept as they are)."""
    from PIL import Image as PILImage

    if im.mode in _WIDE_GRAY:
        im = PILImage.fromarray(_gray_to_8bit(im, _peak(im) if peak is None else peak))
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        rgba = im.convert("RGBA")
        background = PILImage.new("RGB", im.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


def _gray_to_8bit(im: Image, peak: int) -> np.ndarray:
    """Integer scaling of 16/32-bit levels to 0..255, rounded to nearest (no float copies)."""
    import numpy as np

    levels = np.asarray(im).astype(np.int64)
    if peak > 255:  # the 16-bit range down to 8 bits: round(v * 255 / 65535), exactly
        levels = (levels * 255 + 32767) // 65535
    return np.clip(levels, 0, 255).astype(np.uint8)
