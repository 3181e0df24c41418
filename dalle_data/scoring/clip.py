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
    """Scores for a batch: ``clip_score[i]`` and ``probs[i, j]`` over ``labels``."""

    clip_score: list[float]
    probs: np.ndarray
    labels: tuple[str, ...]


class ClipScorer:
    """Wraps an open_clip model, its image transform and tokenizer."""

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, *, name: str, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
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
        """L2-normalized text embeddings, cached per text."""
        import torch

        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            tokens = self.tokenizer(missing).to(self.device)
            with torch.inference_mode(), self._autocast():
                emb = self.model.encode_text(tokens).float()
            emb = torch.nn.functional.normalize(emb, dim=-1)
            for text, row in zip(missing, emb):
                self._text_cache[text] = row
        return torch.stack([self._text_cache[t] for t in texts])

    def encode_images(self, images: Sequence[Image]) -> torch.Tensor:
        import torch

        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        with torch.inference_mode(), self._autocast():
            emb = self.model.encode_image(batch).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def set_labels(self, labels: Sequence[str]) -> None:
        """Compute the zero-shot classifier for ``labels`` (template ensemble)."""
        import torch

        rows = []
        for label in labels:
            emb = self.encode_text([t.format(label) for t in ZERO_SHOT_TEMPLATES]).mean(dim=0)
            rows.append(torch.nn.functional.normalize(emb, dim=-1))
        self._labels = tuple(labels)
        self._label_emb = torch.stack(rows)

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
            clip_score=[float(c) for c in cos.cpu()], probs=probs.cpu().numpy(), labels=self._labels
        )
