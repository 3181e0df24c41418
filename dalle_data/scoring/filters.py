"""Keep-or-reject decisions from CLIP scores.

Two filters, combinable:

* ``min_clip``: keep when the cosine similarity between the image and its own
  prompt reaches a threshold. Cosines are on a different scale for every CLIP
  model (ViT-L-14 puts matching pairs around 0.25-0.35), so this filter is
  off unless asked for.
* ``zero-shot`` (the default): classify the image zero-shot over the run's
  labels and keep it when its own class wins, as He et al. (ICLR 2023, "Is
  synthetic data from generative models ready for image recognition?") do to
  clean synthetic training sets. It needs no threshold, so it means the same
  thing for any scorer. A hard negative (an adversarial image of "a
  dalmatian-like car") is kept when the class it imitates does *not* win:
  if the scorer sees a dalmatian, the image is a positive in disguise and
  would poison the negative set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reason: str | None  # in words
    class_prob: float
    top_class: str
    code: str | None = None  # the reason's code: "min-clip" or "zero-shot" (see dalle_data.records.REASONS)


@dataclass(frozen=True, slots=True)
class ClipFilter:
    """The run's filter: ``min_clip`` threshold (or None) and/or zero-shot."""

    min_clip: float | None = None
    zero_shot: bool = True

    def __call__(
        self, *, clip_score: float, probs: np.ndarray, labels: tuple[str, ...], target: str, hard_negative: bool
    ) -> Verdict:
        idx = labels.index(target)
        top = labels[int(np.argmax(probs))]
        class_prob = float(probs[idx])
        if self.min_clip is not None and clip_score < self.min_clip:
            return Verdict(False, f"clip_score {clip_score:.3f} < min_clip {self.min_clip:.3f}", class_prob, top,
                           "min-clip")
        if self.zero_shot:
            if hard_negative and top == target:
                return Verdict(False, f"zero-shot: looks like {target!r} ({class_prob:.2f}), not a hard negative",
                               class_prob, top, "zero-shot")
            if not hard_negative and top != target:
                return Verdict(False, f"zero-shot: predicted {top!r}, not {target!r} ({class_prob:.2f})",
                               class_prob, top, "zero-shot")
        return Verdict(True, None, class_prob, top)
