"""Generated images kept where they were made: on the accelerator, until they are encoded.

On a GPU the decoder's output stays a tensor: the defect check (black,
constant, non-finite) and CLIP's preprocessing (resize, crop, normalise as
tensor ops) run on the device, and only the encoder copies each image to
the host, as 8-bit pixels. The pixels are exactly those of the host path:
the same ``x * 0.5 + 0.5``, clamp, ``* 255`` and round-half-to-even in the
same dtypes, so the PNG bytes do not depend on which path made them (a
test checks it on the CPU, where both paths run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dalle_data.quality import BLACK_MAX, FLAT_RANGE, Defect

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image


class DeviceImage:
    """One 8-bit RGB image as a ``uint8`` tensor of shape (3, H, W), wherever it lives."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    @property
    def width(self) -> int:
        return int(self.tensor.shape[2])

    @property
    def height(self) -> int:
        return int(self.tensor.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def to_pil(self) -> Image:
        from PIL import Image as PILImage

        return PILImage.fromarray(self.tensor.permute(1, 2, 0).contiguous().cpu().numpy())

    def convert(self, mode: str) -> Image:
        return self.to_pil().convert(mode)


def from_decoder(images: torch.Tensor) -> list[DeviceImage | Defect]:
    """The decoder's raw output (``output_type="pt"``: values in [-1, 1]) as device images, or defects."""
    import torch

    scaled = (images * 0.5 + 0.5).clamp(0, 1)  # what diffusers does before moving "np" output to the host
    out: list[DeviceImage | Defect] = []
    for image in scaled:
        pixels = image.float()
        if not bool(torch.isfinite(pixels).all()):
            out.append(Defect("non-finite values in the decoder output (fp16 overflow?)"))
            continue
        out.append(DeviceImage((pixels * 255).round().to(torch.uint8)))
    return out


def tensor_defect(image: DeviceImage) -> str | None:
    """``quality.image_defect`` for a device image, computed on the device."""
    t = image.tensor
    if t.numel() == 0:
        return "empty image"
    if int(t.max()) <= BLACK_MAX:
        return "black image"
    flat = t.reshape(3, -1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    if int((hi.int() - lo.int()).max()) <= FLAT_RANGE:
        return f"constant image (colour {tuple(int(v) for v in lo.cpu())})"
    return None


def as_pil(image: Any) -> Any:
    """A PIL image for anything the generators return."""
    return image.to_pil() if isinstance(image, DeviceImage) else image
