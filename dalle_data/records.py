"""The one record every stage reads and writes.

A ``Record`` describes one generated image from the moment it is planned to
the moment a writer lays it out. Writers only lay records out: they never
invent fields. See ../shared/DESIGN.md ("One record per generated image").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any


def record_id(*parts: object) -> str:
    """A deterministic id from what made the image (model, prompt, seed, ...)."""
    payload = json.dumps([str(p) for p in parts], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Record:
    """One generated image and everything known about how it was made.

    ``label`` is the class the image is filed under (a class name, or the
    run's hard-negative label for adversarial images); ``imitates`` is the
    class a hard negative imitates. Image modes record their lineage:
    ``source_id`` / ``source_path`` (and ``source2_*``, the second image of a
    fusion) and ``mask`` (how the inpainting mask was made). ``image`` holds the encoded PNG bytes, or
    ``None`` for images that failed or were refused.
    """

    id: str
    label: str
    label_id: int
    class_dir: str
    role: str
    imitates: str | None
    prompt: str
    prompt_source: str
    mode: str
    backend: str
    model: str
    seed: int
    width: int
    height: int
    clip_score: float | None
    class_prob: float | None
    top_class: str | None
    kept: bool
    status: str
    reject_reason: str | None
    error: str | None
    source_id: str | None
    source_path: str | None
    source2_id: str | None
    source2_path: str | None
    mask: str | None
    shard: str
    created_at: str
    image: bytes | None = dataclasses.field(default=None, repr=False)

    def metadata(self) -> dict[str, Any]:
        """All fields but the image bytes, as plain JSON-able values."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.pop("image")
        return data

    def replace(self, **changes: Any) -> "Record":
        return dataclasses.replace(self, **changes)


# Field names in declaration order, image excluded; writers use this so the
# on-disk column order is stable.
METADATA_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Record) if f.name != "image")
