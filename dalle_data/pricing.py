"""What images cost on the hosted images API: the one price table, and estimates.

``IMAGE_PRICES_USD`` is the only place prices live. They are OpenAI's list
prices in US dollars per generated image, by model, ``--quality`` and size
(https://openai.com/api/pricing); prices change, so check them before a large
run. Override them without editing code:

* ``DALLE_DATA_PRICES=prices.yaml``: a YAML (or JSON) file in the same shape,
  ``{model: {quality: {"WIDTHxHEIGHT": usd}}}``, merged over the built-in table
  (add a model, or change one price);
* ``generate --dry-run --price-per-image USD``: one flat price for this estimate.

Estimates cover the image calls only. Masked edits (``inpaint``) also bill the
input image, and the LLM prompt writer bills tokens at the LLM provider's
rates; neither is included. ``--quality auto`` is priced as ``high`` (the
upper bound). A size missing from the table is priced from 1024x1024 by pixel
area.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dalle_data.errors import SpecError

PRICES_ENV = "DALLE_DATA_PRICES"
BASE_SIZE = "1024x1024"

_SQUARE_AND_WIDE = ("1024x1024", "1536x1024", "1024x1536")


def _row(square: float, wide: float) -> dict[str, float]:
    return dict(zip(_SQUARE_AND_WIDE, (square, wide, wide)))


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

    def as_dict(self) -> dict[str, Any]:
        return {"currency": "USD", "per_image": self.per_image, "expected": self.expected, "max": self.most,
                "source": self.source, "note": self.note}


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


def estimate(model: str, quality: str, size: str, images: int, most: int, flat: float | None = None) -> Estimate:
    """Cost of ``images`` (the quota) up to ``most`` (the attempt budget) images."""
    note_extra = "image calls only: edits also bill the input image; LLM tokens are not included"
    if flat is not None:
        if not _is_price(flat):
            raise SpecError(f"--price-per-image must be a number ≥ 0, got {flat}")
        per, source, note = float(flat), "--price-per-image", ""
    else:
        per, source, note = price_per_image(model, quality, size)
    note = "; ".join(n for n in (note, note_extra if per is not None else "") if n)
    if per is None:
        return Estimate(None, None, None, source, note)
    return Estimate(per, round(per * images, 4), round(per * most, 4), source, note)


def describe(est: Estimate) -> str:
    """One line for people."""
    if est.per_image is None:
        return f"cost: unknown ({est.note})"
    text = f"cost: ${est.expected:,.2f} if every image is kept, at most ${est.most:,.2f} (${est.per_image:g}/image, {est.source})"
    return text + (f"; {est.note}" if est.note else "")
