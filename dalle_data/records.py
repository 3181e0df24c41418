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


NON_METADATA = ("image", "vectors")  # Record fields that are not metadata columns


@dataclass(frozen=True, slots=True)
class Record:
    """One generated image and everything known about how it was made.

    ``label`` is the class the image is filed under (a class name, or the
    run's hard-negative label for adversarial images); ``imitates`` is the
    class a hard negative imitates. Image modes record their lineage:
    ``source_id`` / ``source_path`` (and ``source2_*``, the second image of a
    fusion) and ``mask`` (how the inpainting mask was made). ``image`` holds the encoded PNG bytes, or
    ``None`` for images that failed or were refused; ``sha256`` their hash.

    Every record that is not kept carries a ``reject_reason`` from the fixed
    set ``REASONS`` (summaries count by it); the particulars are in
    ``reject_detail`` (rejected) or ``error`` (failed, refused).
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
    reject_detail: str | None = None  # why a rejected image was rejected, in words (reject_reason is the code)
    sha256: str | None = None  # of the PNG bytes, so verify can check every copy of the image
    learner_prob: float | None = None  # --select uncertain: the learner's probability of the image's label
    image: bytes | None = dataclasses.field(default=None, repr=False)
    # What the scorer saw (embedding, class probabilities): carried from scoring to the embeddings writer,
    # never part of the metadata (see dalle_data.embeddings).
    vectors: Any = dataclasses.field(default=None, repr=False, compare=False)

    def metadata(self) -> dict[str, Any]:
        """All fields but the image bytes and the scorer's vectors, as plain JSON-able values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in NON_METADATA}

    def replace(self, **changes: Any) -> "Record":
        return dataclasses.replace(self, **changes)


# Field names in declaration order, image and vectors excluded; writers use this so the
# on-disk column order is stable.
METADATA_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Record) if f.name not in NON_METADATA)
STATUSES: tuple[str, ...] = ("kept", "rejected", "failed", "refused")
NOT_SELECTED = "not-selected"

# Why a record is not kept: a small fixed set of codes (the details stay per record).
REASONS: dict[str, str] = {
    "zero-shot": "the scorer's zero-shot classifier did not pick the image's class (or, for a hard negative, did)",
    "min-clip": "the CLIP cosine to the prompt was below --min-clip",
    "surplus": "it passed, but its quota was already met",
    "defect": "the image was unusable: black, one flat colour, non-finite or undecodable output",
    "source-unreadable": "its source image could not be read (not an image, empty, truncated, too large)",
    "mask-unusable": "its inpainting mask was missing, all black or all white",
    "refused": "the hosted API refused the prompt (moderation)",
    "review": "a person rejected it in review",
    "duplicate": "a near-duplicate of another image of its class, set aside by dedup",
    "not-selected": "it passed, but the learner needed other candidates more (--select uncertain)",
    "error": "another failure; see the record's error",
}


def reason_code(reason: str | None, status: str = "rejected") -> str | None:
    """The code for a reason, also for records written before codes existed ("zero-shot: predicted ...")."""
    if status == "kept":
        return None
    if status == "refused":
        return "refused"
    if reason is None:
        return "defect" if status == "failed" else None
    if reason in REASONS:
        return reason
    head = reason.split(":")[0].strip()
    if head in REASONS:
        return head
    if head.startswith("clip_score"):
        return "min-clip"
    if "mask" in reason.lower():
        return "mask-unusable"
    return "source-unreadable" if status == "failed" and ("/" in reason or "\\" in reason) else "error"


def validate_record(row: Any, where: str = "record") -> Record:
    """A ``Record`` from a parsed JSON row, its types checked; raises ``ValueError`` naming what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"{where} is not a JSON object")
    fields = {f.name: f for f in dataclasses.fields(Record) if f.name not in NON_METADATA}
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise ValueError(f"{where} has unknown field {unknown[0]!r}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in row:
            if field.default is dataclasses.MISSING:
                raise ValueError(f"{where} lacks {name!r}")
            continue
        values[name] = _checked(row[name], str(field.type), f"{where}.{name}")
    if values["status"] not in STATUSES:
        raise ValueError(f"{where}.status {values['status']!r} is not one of {', '.join(STATUSES)}")
    if values["kept"] != (values["status"] == "kept"):
        raise ValueError(f"{where}: kept and status disagree")
    return Record(**values)


def _checked(value: Any, annotation: str, where: str) -> Any:
    optional = "None" in annotation
    base = annotation.replace(" ", "").replace("|None", "").replace("None|", "")
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where} is null")
    kinds: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
    ok = isinstance(value, kinds[base]) and not (base in ("int", "float") and isinstance(value, bool))
    if not ok:
        raise ValueError(f"{where} should be {base}, not {type(value).__name__}")
    return float(value) if base == "float" else value
