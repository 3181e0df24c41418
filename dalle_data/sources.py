"""Source images for the image-driven modes (variation, fuse, inpaint).

``--from DIR`` may be:

* an ImageFolder tree, ``DIR/<class>/<image>``: the folder name is the class;
* a dalle-data output (``DIR/spec.yaml``): its kept images, with their labels
  and ids (read from ``imagefolder/<split>/`` or ``parquet/<split>/``);
* a flat folder of images plus ``--classes NAME`` (exactly one class).

Discovery only lists files (cheap, done while planning); images are opened
when a unit needs them, one at a time, so memory stays bounded. A file that
cannot be used (not an image, empty, truncated) becomes a ``failed`` record
with the reason, never a crash. Grayscale, palette, RGBA (composited on
white) and 16-bit images are converted to 8-bit RGB; images larger than
``MAX_SIDE`` are reduced on load.
"""

from __future__ import annotations

import hashlib
import io
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data.errors import SpecError

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


def _file_id(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    stat = path.stat()
    return hashlib.sha256(f"{rel}\x1f{stat.st_size}".encode()).hexdigest()[:16]


def _images_in(folder: Path) -> list[Path]:
    """Files with an image suffix (others, such as notes.txt or Thumbs.db, are not sources)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_name(folder: Path) -> str:
    """A folder's class name, normalized as class names are (NFC, trimmed)."""
    return unicodedata.normalize("NFC", folder.name).strip()


def source_root(from_dir: str | None) -> Path | None:
    """Where ``--from``'s images lie on this machine (a URL's local copy)."""
    from dalle_data.remote import cache_dir, is_url, local_path

    if not from_dir:
        return None
    return cache_dir(from_dir, "sources") if is_url(from_dir) else Path(local_path(from_dir)).expanduser()


def discover_sources(root: str | Path, classes: list[str] | None = None) -> list[Source]:
    """List the sources under ``root`` (see module docstring; a URL is copied to a local cache once)."""
    from dalle_data.remote import is_url, local_path, pull_sources

    root = pull_sources(str(root)) if is_url(root) else Path(local_path(str(root))).expanduser()
    if not root.is_dir():
        raise SpecError(f"--from {root}: no such directory")
    if (root / "spec.yaml").is_file():
        sources = _from_run(root)
    else:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if subdirs:
            sources = [Source(_file_id(f, root), _class_name(d), str(f)) for d in subdirs for f in _images_in(d)]
        elif not _images_in(root):
            raise SpecError(f"--from {root}: no source images found (an empty folder)")
        else:
            if not classes or len(classes) != 1:
                raise SpecError(
                    f"--from {root} is a flat folder: name its one class with --classes NAME "
                    "(or arrange the images as <class>/<image>)"
                )
            sources = [Source(_file_id(f, root), classes[0], str(f)) for f in _images_in(root)]
    if classes is not None:
        # Folders may be named after a class or after its safe folder name ("red_circle" for "red circle").
        from dalle_data.naming import safe_dir_name

        by_folder = {safe_dir_name(c): c for c in classes} | {c: c for c in classes}
        sources = [Source(s.id, by_folder[s.label], s.path, s.data) for s in sources if s.label in by_folder]
    if not sources:
        raise SpecError(f"--from {root}: no source images found" + (f" for {', '.join(classes)}" if classes else ""))
    return sources


def _from_run(root: Path) -> list[Source]:
    """The kept images of a dalle-data output, labels and ids from its records (read through its run reader)."""
    from dalle_data.rundir import open_run

    run = open_run(root)
    layout = run.layout
    kept = [r for r in run.records() if r.status == "kept"]
    if "imagefolder" in run.spec.formats and layout.metadata().is_file():
        return [Source(r.id, r.label, str(layout.png(r.class_dir, r.id))) for r in kept]
    import pyarrow.parquet as pq

    sources = []
    by_shard: dict[str, list[Any]] = {}
    for record in kept:
        by_shard.setdefault(record.shard, []).append(record)
    for shard, records in by_shard.items():
        part = layout.parquet_part(shard)
        rows = {row["id"]: row["image"]["bytes"] for row in pq.read_table(part, columns=["id", "image"]).to_pylist()}
        sources += [Source(r.id, r.label, f"{part}#{r.id}", rows.get(r.id)) for r in records]
    return sources


def sources_digest(sources: list[Source]) -> str:
    blob = "\n".join(f"{s.id}\x1f{s.label}\x1f{s.path}" for s in sources)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
