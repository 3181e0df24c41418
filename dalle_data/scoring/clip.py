"""A separate CLIP (open_clip) that scores every generated image.

Two numbers per image: the cosine similarity between the image and its own
prompt (``clip_score``), and zero-shot class probabilities over a label set
(the run's classes, plus a negative vocabulary where the run needs one).
Text embeddings are cached, so the class embeddings are computed once per run
and each distinct prompt once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from dalle_data.device_images import DeviceImage, as_pil

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL.Image import Image

log = logging.getLogger(__name__)

# Zero-shot prompt ensemble (a short subset of the CLIP paper's ImageNet templates).
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a rendering of a {}.",
    "a drawing of a {}.",
)


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """Scores for a batch: ``clip_score[i]``, ``probs[i, j]`` over ``labels`` and, when the scorer
    has them, the L2-normalised image embeddings ``embeddings[i]`` (kept per shard: dalle_data.embeddings)."""

    clip_score: list[float]
    probs: np.ndarray
    labels: tuple[str, ...]
    embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class TensorPreprocess:
    """CLIP's image preprocessing as tensor ops on the device: shortest side to ``size`` (bicubic,
    antialiased), centre crop to ``crop``, scale to [0, 1], normalise."""

    size: int
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) → normalised float (N, 3, crop)."""
        import torch
        from torchvision.transforms.v2 import functional as F

        x = F.resize(batch, [self.size], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
        x = F.center_crop(x, list(self.crop)).float() / 255.0
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @classmethod
    def from_transforms(cls, preprocess: Any) -> TensorPreprocess | None:
        """From an open_clip / torchvision ``Compose`` of Resize, CenterCrop, conversions, Normalize; else None."""
        size = crop = mean = std = None
        for t in getattr(preprocess, "transforms", ()):
            kind = type(t).__name__
            if kind == "Resize" and isinstance(t.size, (int, list, tuple)):
                size = t.size if isinstance(t.size, int) else (t.size[0] if len(t.size) == 1 else None)
            elif kind == "CenterCrop":
                crop = tuple(t.size) if isinstance(t.size, (list, tuple)) else (t.size, t.size)
            elif kind == "Normalize":
                mean, std = tuple(t.mean), tuple(t.std)
            elif kind not in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "function"):
                return None
        if size is None or crop is None or mean is None:
            return None
        return cls(int(size), (int(crop[0]), int(crop[1])), mean, std)  # type: ignore[arg-type]


class ClipScorer:
    """Wraps an open_clip model, its image transform and tokenizer."""

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, *, name: str, device: str = "cpu",
                 tensor_preprocess: TensorPreprocess | None = None) -> None:
        self.model = model.to(device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.tensor_preprocess = tensor_preprocess or TensorPreprocess.from_transforms(preprocess)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._labels: tuple[str, ...] = ()
        self._label_emb: torch.Tensor | None = None

    def _autocast(self):  # noqa: ANN202 - context manager
        import contextlib

        import torch

        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalized text embeddings, cached per text.

        Each text is encoded on its own: a batch's last bits depend on what else is in it, and which texts
        are missing here depends on what was scored before (a resumed run replays other shards first), so a
        batched encoding would let a resume change a score (issue 21, item 15). One text per call costs
        little: each prompt is encoded once per run.
        """
        import torch

        for text in dict.fromkeys(t for t in texts if t not in self._text_cache):
            tokens = self.tokenizer([text]).to(self.device)
            with torch.inference_mode(), self._autocast():
                emb = self.model.encode_text(tokens).float()
            self._text_cache[text] = torch.nn.functional.normalize(emb, dim=-1)[0]
        return torch.stack([self._text_cache[t] for t in texts])

    def encode_images(self, images: Sequence[Image]) -> torch.Tensor:
        """L2-normalized image embeddings. Device images (``dalle_data.device_images``) are preprocessed as
        tensors where they are, when the scorer knows its preprocessing as tensor ops; others through PIL."""
        import torch

        if self.tensor_preprocess is not None and images and all(isinstance(im, DeviceImage) for im in images):
            stacked = torch.stack([im.tensor for im in images]).to(self.device)  # type: ignore[attr-defined]
            batch = self.tensor_preprocess(stacked)
        else:
            batch = torch.stack([self.preprocess(as_pil(im).convert("RGB")) for im in images]).to(self.device)
        with torch.inference_mode(), self._autocast():
            emb = self.model.encode_image(batch).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def label_embeddings(self, labels: Sequence[str]) -> torch.Tensor:
        """The zero-shot classifier's rows for ``labels`` (template ensemble, normalised); changes nothing."""
        import torch

        rows = []
        for label in labels:
            emb = self.encode_text([t.format(label) for t in ZERO_SHOT_TEMPLATES]).mean(dim=0)
            rows.append(torch.nn.functional.normalize(emb, dim=-1))
        return torch.stack(rows)

    def set_labels(self, labels: Sequence[str]) -> None:
        """Compute the zero-shot classifier for ``labels`` (template ensemble)."""
        self._labels = tuple(labels)
        self._label_emb = self.label_embeddings(labels)

    def score(self, images: Sequence[Image], prompts: Sequence[str]) -> ScoreBatch:
        """Cosine to each image's prompt, and class probabilities over the labels."""
        import torch

        if self._label_emb is None:
            raise RuntimeError("call set_labels() before score()")
        img = self.encode_images(images)
        txt = self.encode_text(prompts)
        cos = (img * txt).sum(dim=-1)
        scale = float(self.model.logit_scale.detach().exp().clamp(max=100.0))
        probs = torch.softmax(scale * img @ self._label_emb.T, dim=-1)
        return ScoreBatch(
            clip_score=[float(c) for c in cos.cpu()], probs=probs.cpu().numpy(), labels=self._labels,
            embeddings=img.cpu().numpy(),
        )
