"""What images cost on the hosted images API: the one price table, and estimates.

``IMAGE_PRICES_USD`` is the only place prices live. They are OpenAI's list
prices in US dollars per generated image, by model, ``--quality`` and size
(https://openai.com/api/pricing), as checked on ``PRICES_CHECKED``; prices
change, so check them before a large run. Current GPT image models are billed
by tokens (text input, image input, image output): ``TOKEN_PRICES_USD`` holds
those rates and ``OUTPUT_TOKENS`` the image output tokens per quality and
size, and ``--dry-run`` shows the token-based price beside the per-image one
(they agree for generations; an edit also bills its input images' tokens,
which only the token basis counts: one for inpaint and variation, two for
fuse, whose references are both sent). Override the per-image prices without
editing code:

* ``DALLE_DATA_PRICES=prices.yaml``: a YAML (or JSON) file in the same shape,
  ``{model: {quality: {"WIDTHxHEIGHT": usd}}}``, merged over the built-in table
  (add a model, or change one price);
* ``generate --dry-run --price-per-image USD``: one flat price for this estimate.

Estimates cover the image calls only. Edits (``inpaint``, ``variation``,
``fuse``) also bill their input images, which only the token basis includes
(for a run of several modes, the mode with the most input images), and the
LLM prompt writer bills tokens at the LLM provider's rates, which no estimate
includes. ``--quality auto`` is priced as ``high`` (the
upper bound). A size missing from the table is priced from 1024x1024 by pixel
area.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dalle_data.backends import OPENAI_DEFAULT_QUALITY
from dalle_data.errors import SpecError
from dalle_data.modes import MODES

PRICES_ENV = "DALLE_DATA_PRICES"
BASE_SIZE = "1024x1024"

_SQUARE_AND_WIDE = ("1024x1024", "1536x1024", "1024x1536")


def _row(square: float, wide: float) -> dict[str, float]:
    return dict(zip(_SQUARE_AND_WIDE, (square, wide, wide)))


PRICES_CHECKED = "2026-11-30"  # when the tables below were last checked against the provider's price page

# (Retired models: backends.RETIRED_MODELS, refused when the spec is checked.)
# USD per million tokens: model → text input, image input, image output.
TOKEN_PRICES_USD: dict[str, dict[str, float]] = {
    "gpt-image-1.5": {"text_input": 5.0, "image_input": 8.0, "image_output": 32.0},
    "gpt-image-1-mini": {"text_input": 2.0, "image_input": 2.5, "image_output": 8.0},
}
# Image output tokens per generated image: quality → size (the provider's documented counts).
OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1536x1024": 408, "1024x1536": 408},
    "medium": {"1024x1024": 1056, "1536x1024": 1584, "1024x1536": 1584},
    "high": {"1024x1024": 4160, "1536x1024": 6240, "1024x1536": 6240},
}
INPUT_IMAGE_TOKENS = 765  # a 1024² input image of an edit (high detail: 4 tiles × 170 + 85)


def input_images(modes: Any) -> int:
    """Input images one image of ``modes`` (names) sends at most: its sources (inpaint and variation 1, fuse 2).

    Every image-driven mode is an edit that uploads its sources; text modes send none. The most over the
    modes is an upper bound for a mixed run, as ``--quality auto`` is priced as ``high``."""
    return max((MODES[m].sources for m in modes if m in MODES), default=0)


def token_price_per_image(model: str, quality: str, size: str, prompt_tokens: int = 40,
                          edit: bool = False, images_in: int = 0) -> dict[str, Any] | None:
    """The token-billed price of one image (None when the model's token rates are not known); ``images_in``
    input images are billed as image input tokens (``edit``: at least one)."""
    rates = TOKEN_PRICES_USD.get(model)
    if rates is None:
        return None
    quality = "high" if quality == "auto" else quality
    counts = OUTPUT_TOKENS.get(quality, OUTPUT_TOKENS["medium"])
    if size in counts:
        output = counts[size]
    else:
        w, h = (int(p) for p in size.split("x"))
        output = round(counts["1024x1024"] * (w * h) / (1024 * 1024))
    image_input = INPUT_IMAGE_TOKENS * max(images_in, int(edit))
    usd = (prompt_tokens * rates["text_input"] + image_input * rates["image_input"]
           + output * rates["image_output"]) / 1e6
    return {"per_image": round(usd, 6), "tokens": {"text_input": prompt_tokens, "image_input": image_input,
                                                   "image_output": output},
            "usd_per_million": dict(rates), "checked": PRICES_CHECKED}


# USD per image: model → quality → size.
IMAGE_PRICES_USD: dict[str, dict[str, dict[str, float]]] = {
    "gpt-image-1.5": {"low": _row(0.009, 0.013), "medium": _row(0.034, 0.05), "high": _row(0.133, 0.2)},
    "gpt-image-1-mini": {"low": _row(0.005, 0.006), "medium": _row(0.011, 0.015), "high": _row(0.036, 0.052)},
}


@dataclass(frozen=True)
class Estimate:
    """The cost of a run's image calls, from the images it may make."""

    per_image: float | None  # None: no price known
    expected: float | None  # every image kept: the quota exactly
    most: float | None  # the attempt budget spent to the end
    source: str  # where the price came from
    note: str
    checked: str = PRICES_CHECKED
    tokens: dict[str, Any] | None = None  # the token-billed basis (token_price_per_image)

    def as_dict(self) -> dict[str, Any]:
        return {"currency": "USD", "per_image": self.per_image, "expected": self.expected, "max": self.most,
                "source": self.source, "note": self.note, "prices_checked": self.checked,
                "token_basis": self.tokens}


def load_prices() -> tuple[dict[str, dict[str, dict[str, float]]], str]:
    """The built-in table merged with ``$DALLE_DATA_PRICES``, and where it came from."""
    table = {m: {q: dict(s) for q, s in qs.items()} for m, qs in IMAGE_PRICES_USD.items()}
    path = os.environ.get(PRICES_ENV, "").strip()
    if not path:
        return table, "built-in table (dalle_data/pricing.py)"
    try:
        data = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SpecError(f"{PRICES_ENV}={path}: cannot read the price file ({err})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{PRICES_ENV}={path}: expected a mapping model → quality → size → USD per image")
    for model, qualities in data.items():
        if not isinstance(qualities, dict):
            raise SpecError(f"{PRICES_ENV}={path}: {model}: expected a mapping quality → size → USD")
        for quality, sizes in qualities.items():
            if not isinstance(sizes, dict) or not all(_is_price(v) for v in sizes.values()):
                raise SpecError(f"{PRICES_ENV}={path}: {model}.{quality}: expected a mapping size → USD (a number ≥ 0)")
            target = table.setdefault(str(model), {}).setdefault(str(quality), {})
            target.update({str(k): float(v) for k, v in sizes.items()})
    return table, f"{PRICES_ENV}={path} over the built-in table"


def _check_flat(flat: float) -> None:
    if not _is_price(flat):
        raise SpecError(f"--price-per-image must be a number ≥ 0, got {flat}")


def _is_price(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def price_per_image(model: str, quality: str, size: str) -> tuple[float | None, str, str]:
    """(USD per image or None, source, note) for one model, quality and size."""
    table, source = load_prices()
    notes = []
    if quality == "auto":
        quality, notes = "high", ["quality auto priced as high"]
    sizes = table.get(model, {}).get(quality)
    if not sizes:
        known = ", ".join(sorted(table)) or "none"
        return None, source, (f"no price known for {model!r} at quality {quality}; pass --price-per-image USD "
                              f"or add it to a {PRICES_ENV} file (priced models: {known})")
    if size in sizes:
        return sizes[size], source, "; ".join(notes)
    if BASE_SIZE not in sizes:
        return None, source, f"no price for {model!r} at {size}; pass --price-per-image USD"
    w, h = (int(p) for p in size.split("x"))
    notes.append(f"{size} priced from {BASE_SIZE} by pixel area")
    return round(sizes[BASE_SIZE] * (w * h) / (1024 * 1024), 6), source, "; ".join(notes)


BATCH_DISCOUNT = 0.5  # the Batch API bills half the list price


def estimate(model: str, quality: str, size: str, images: int, most: int, flat: float | None = None,
             edit: bool = False, batch: bool = False, modes: Any = ()) -> Estimate:
    """Cost of ``images`` (the quota) up to ``most`` (the attempt budget) images (``batch``: through the Batch
    API, at half price; edits are never batched). The token basis bills ``input_images(modes)`` input images
    (``edit``: at least one)."""
    images_in = max(input_images(modes), int(edit))
    edit = images_in > 0
    tokens = token_price_per_image(model, quality, size, images_in=images_in)
    note_extra = ("image calls only: edits, variations and fuses also bill their input images; "
                  "LLM tokens are not included")
    if flat is not None:
        _check_flat(flat)
        per, source, note = float(flat), "--price-per-image", ""
    else:
        per, source, note = price_per_image(model, quality, size)
    if batch and per is not None and not edit:
        per = round(per * BATCH_DISCOUNT, 6)
        note = "; ".join(n for n in (note, f"Batch API: {BATCH_DISCOUNT:.0%} of the list price") if n)
        if tokens is not None:
            tokens = {**tokens, "per_image": round(tokens["per_image"] * BATCH_DISCOUNT, 6)}
    note = "; ".join(n for n in (note, note_extra if per is not None else "") if n)
    if per is None:
        return Estimate(None, None, None, source, note, tokens=tokens)
    return Estimate(per, round(per * images, 4), round(per * most, 4), source, note, tokens=tokens)


def describe(est: Estimate) -> str:
    """One line for people."""
    if est.per_image is None:
        return f"cost: unknown ({est.note})"
    text = f"cost: ${est.expected:,.2f} if every image is kept, at most ${est.most:,.2f} (${est.per_image:g}/image, {est.source})"
    text += f"; prices checked {est.checked}" if est.checked else ""
    if est.tokens:
        t, r = est.tokens["tokens"], est.tokens["usd_per_million"]
        text += (f"; token basis ${est.tokens['per_image']:g}/image ({t['image_output']} image output tokens at "
                 f"${r['image_output']:g}/M, ~{t['text_input']} text tokens at ${r['text_input']:g}/M"
                 + (f", {t['image_input']} input image tokens at ${r['image_input']:g}/M" if t["image_input"] else "")
                 + ")")
    return text + (f"; {est.note}" if est.note else "")


# -- the backends' price models (dalle_data.backends: Backend.price) ------------------------------------------


def local_cost(spec: Any, images: int, most: int, flat: float | None = None) -> dict[str, Any]:
    """Nothing per image: a local model (--price-per-image prices the machine time if you know it)."""
    if flat is not None:
        _check_flat(flat)
    per = float(flat or 0.0)
    source, note = ("--price-per-image", "your price of one image's machine time") if flat is not None else (
        "local model", "local generation: no per-image API charge")
    return {"cost": {"currency": "USD", "per_image": per, "expected": round(per * images, 4),
                     "max": round(per * most, 4), "source": source, "note": note}}


def api_cost(spec: Any, images: int, most: int, flat: float | None = None) -> dict[str, Any]:
    """The images API list price per image, and the token basis, with the date both were checked."""
    quality = spec.quality or OPENAI_DEFAULT_QUALITY
    size = f"{spec.width or 1024}x{spec.height or 1024}"
    cost = estimate(spec.model, quality, size, images, most, flat, modes=spec.modes, batch=spec.openai_batch)
    return {"quality": quality, "size": size, "max_concurrency": spec.max_concurrency, "cost": cost.as_dict()}
