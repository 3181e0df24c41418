"""Inputs of the image-driven modes, prepared per work unit.

* ``variation``: the source's CLIP image embedding, optionally nudged toward
  the class prompt: conditions ``[source, prompt]`` with weights
  ``[1 - prompt_weight, prompt_weight]``.
* ``fuse``: two sources of one class, weights ``[w, 1 - w]``
  (``--fuse-weight w``), optionally with the class prompt: then all image
  weights are scaled by ``1 - prompt_weight``.
* ``inpaint``: the source and a mask (``masks``), at the generation size.

Sources are opened here, one unit at a time; a source that cannot be used
raises ``SourceError`` and the unit becomes a failed record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data.masks import auto_mask, find_mask_file, load_mask
from dalle_data.modes import MODES
from dalle_data.sources import SourceError

if TYPE_CHECKING:
    from PIL.Image import Image

    from dalle_data.execution.plan import Unit as WorkUnit

VARIATION_MODES = frozenset(m.name for m in MODES.values() if m.call == "variation")
IMAGE_MODES = frozenset(m.name for m in MODES.values() if m.image)


@dataclass(frozen=True)
class ImageOptions:
    prompt_weight: float = 0.0
    fuse_weight: float = 0.5
    mask: str = "border"
    mask_dir: Path | None = None
    source_root: Path | None = None


@dataclass
class Prepared:
    """What the generator needs for one unit, and what the record keeps of it."""

    conditions: list[Any]
    weights: list[float]
    image: Image | None = None
    mask: Image | None = None
    mask_desc: str | None = None


def weights_for(unit: WorkUnit, opts: ImageOptions) -> list[float]:
    images = [1.0] if unit.mode == "variation" else [opts.fuse_weight, 1.0 - opts.fuse_weight]
    if opts.prompt_weight > 0:
        return [w * (1.0 - opts.prompt_weight) for w in images] + [opts.prompt_weight]
    return images


def id_parts(unit: WorkUnit, opts: ImageOptions) -> tuple[Any, ...]:
    """What besides prompt and seed decides an image-mode output (part of its id)."""
    if unit.mode not in IMAGE_MODES:
        return ()
    sources = tuple(s.id for s in unit.sources)
    if unit.mode == "inpaint":
        return sources + (f"mask-dir:{opts.mask_dir}" if opts.mask_dir else f"mask:{opts.mask}",)
    return sources + tuple(round(w, 6) for w in weights_for(unit, opts))


def prepare(unit: WorkUnit, opts: ImageOptions, size: tuple[int, int]) -> Prepared:
    """Open the unit's sources (and mask); raises ``SourceError``."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    mode = unit.mode
    if mode in VARIATION_MODES:
        images: list[Any] = [s.open(size) for s in unit.sources]
        conditions = images + ([unit.prompt.prompt] if opts.prompt_weight > 0 else [])
        return Prepared(conditions=conditions, weights=weights_for(unit, opts))
    source = unit.sources[0]
    if opts.mask_dir is not None:
        original = source.open()
        path = find_mask_file(opts.mask_dir, source.path, opts.source_root or Path(source.path).parent)
        if path is None:
            raise SourceError(f"no mask for {source.path} in {opts.mask_dir} (same relative path and stem expected)",
                              code="mask-unusable")
        try:
            loaded = load_mask(path, original.size)
        except SourceError as err:
            raise SourceError(str(err), code="mask-unusable") from None
        mask = ImageOps.fit(loaded, size, method=PILImage.Resampling.NEAREST)
        image = ImageOps.fit(original, size, method=PILImage.Resampling.BICUBIC)
        desc = f"file: {path}"
    else:
        image = source.open(size)
        mask, desc = auto_mask(opts.mask, size, unit.seed)
    return Prepared(conditions=[], weights=[], image=image, mask=mask, mask_desc=desc)


def check_source(source: Any, mode: str, opts: ImageOptions, size: tuple[int, int]) -> SourceError | None:
    """Why ``source`` cannot be used for ``mode`` (its image, or for inpainting its mask file), or None."""
    try:
        image = source.open()
        if mode == "inpaint" and opts.mask_dir is not None:
            path = find_mask_file(opts.mask_dir, source.path, opts.source_root or Path(source.path).parent)
            if path is None:
                return SourceError(f"no mask for {source.path} in {opts.mask_dir} (same relative path and stem "
                                   "expected)", code="mask-unusable")
            try:
                load_mask(path, image.size)
            except SourceError as err:
                return SourceError(str(err), code="mask-unusable")
    except SourceError as err:
        return err
    return None
