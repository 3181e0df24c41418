"""A CLIP scorer from a transformers text tower and image tower.

Used for the ``shapes-demo`` preset, whose CLIP is the one its prior was
trained with (``prior/text_encoder``, ``prior/image_encoder``); the logit
scale is read from ``dalle_data_model.json``. It plugs into ``ClipScorer``
through the same three calls open_clip models answer: ``encode_text``,
``encode_image`` and ``logit_scale``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dalle_data.errors import ModelLoadError
from dalle_data.hub import quiet_libraries
from dalle_data.scoring.clip import ClipScorer, TensorPreprocess


def load_hf_towers(model_dir: Path, device: str = "cpu", name: str | None = None) -> Any:
    """The prior's CLIP towers of a Kandinsky-layout model folder as a scorer, called ``name`` (as the user
    names the model: the card and report are handed on, a path into one machine's folders is not)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

    prior = model_dir / "prior"
    if not (prior / "text_encoder").is_dir() or not (prior / "image_encoder").is_dir():
        raise ModelLoadError(f"{model_dir} has no prior/text_encoder and prior/image_encoder to score with")
    quiet_libraries()
    card = json.loads((model_dir / "dalle_data_model.json").read_text())
    text = CLIPTextModelWithProjection.from_pretrained(str(prior / "text_encoder"), dtype=torch.float32)
    image = CLIPVisionModelWithProjection.from_pretrained(str(prior / "image_encoder"), dtype=torch.float32)
    tokenizer = CLIPTokenizer.from_pretrained(str(prior / "tokenizer"))
    processor = CLIPImageProcessor.from_pretrained(str(prior / "image_processor"))
    towers = Towers(text, image, float(card.get("clip_logit_scale", 100.0)))

    def tokenize(texts: list[str]) -> Any:
        return tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                         return_tensors="pt")

    def preprocess(image_: Any) -> Any:
        return processor(image_, return_tensors="pt").pixel_values[0]

    def field(holder: Any, name: str) -> Any:
        return holder.get(name) if isinstance(holder, dict) else getattr(holder, name, None)

    size = field(processor.size, "shortest_edge")
    height, width = field(processor.crop_size, "height"), field(processor.crop_size, "width")
    tensor = TensorPreprocess(int(size), (int(height), int(width)), tuple(processor.image_mean),
                              tuple(processor.image_std)) if size and height and width else None
    return ClipScorer(towers, preprocess, tokenize, name=f"{name or model_dir} (prior CLIP)", device=device,
                      tensor_preprocess=tensor)


class Towers:
    """``encode_text`` / ``encode_image`` / ``logit_scale`` over two transformers CLIP towers."""

    def __init__(self, text: Any, image: Any, scale: float) -> None:
        import torch

        self.text, self.image = text, image
        self.logit_scale = torch.tensor(math.log(scale))

    def to(self, device: str) -> "Towers":
        self.text, self.image = self.text.to(device), self.image.to(device)
        return self

    def eval(self) -> "Towers":
        self.text.eval()
        self.image.eval()
        return self

    def encode_text(self, tokens: Any) -> Any:
        return self.text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).text_embeds

    def encode_image(self, pixels: Any) -> Any:
        return self.image(pixel_values=pixels).image_embeds
