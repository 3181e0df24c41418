"""A finished run as review sees it: its labels, its records, their original state.

``load_run(OUT)`` reads ``OUT/spec.yaml`` (classes, the hard-negative label,
split), ``OUT/manifest.jsonl`` (every record as it is now) and
``OUT/review/originals.jsonl`` (the state of each record before ``--apply``
first changed it). A record's *original* state is its line in
``originals.jsonl`` when there is one, else its manifest line: the review page
always shows images as ``generate`` made them, and decisions are relative to
that state.

Originals written for another spec (a run redone with ``--overwrite`` and a
different spec into the same folder) are ignored: each line carries the
spec hash of the run it belongs to; so is an original whose ``created_at``
differs from the manifest's (the same spec generated again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dalle_data.errors import OutputDirError
from dalle_data.naming import class_dirs as make_class_dirs
from dalle_data.records import METADATA_FIELDS, Record

log = logging.getLogger(__name__)

REVIEW_DIR = "review"
DECISIONS_FILE = "decisions.jsonl"
ORIGINALS_FILE = "originals.jsonl"
APPLIED_FILE = "applied.jsonl"
MANIFEST_FILE = "manifest.jsonl"


@dataclass(frozen=True)
class ReviewRun:
    """One run directory: labels, folder names, and every record now and originally."""

    out: Path
    spec_hash: str
    classes: tuple[str, ...]  # the run's classes: the targets of a relabel
    labels: tuple[str, ...]  # ClassLabel names: the classes, then the hard-negative label if any
    negative_label: str | None  # the run's hard-negative label, when the run has one
    class_dirs: dict[str, str]
    split: str
    complete: bool
    records: tuple[Record, ...]  # manifest order, as they are now
    originals: dict[str, Record] = field(default_factory=dict)  # id -> state before the first apply
    by_id: dict[str, Record] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {r.id: r for r in self.records})

    @property
    def review_dir(self) -> Path:
        return self.out / REVIEW_DIR

    def current(self, record_id: str) -> Record | None:
        return self.by_id.get(record_id)

    def original(self, record: Record) -> Record:
        """The record as ``generate`` made it. An original saved for an earlier
        generation of the same id (the run redone with ``--overwrite``) is ignored."""
        saved = self.originals.get(record.id)
        return saved if saved is not None and saved.created_at == record.created_at else record

    def reviewable(self) -> list[Record]:
        """Records that ``generate`` kept, in their original state, manifest order."""
        return [o for o in (self.original(r) for r in self.records) if o.status == "kept"]

    def label_id(self, label: str) -> int:
        return self.labels.index(label)


def read_records(path: Path, spec_hash: str | None = None) -> list[Record]:
    """Records from a JSON Lines file of ``Record.metadata()`` rows.

    With ``spec_hash``, rows that carry another ``spec_hash`` are skipped. A
    torn last line (a power cut mid-append) is skipped with a warning.
    """
    records: list[Record] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return records
    except (OSError, UnicodeDecodeError) as err:
        raise OutputDirError(f"cannot read {path}: {err}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row: dict[str, Any] = json.loads(line)
            if spec_hash is not None and row.get("spec_hash", spec_hash) != spec_hash:
                continue
            records.append(Record(**{k: row.get(k) for k in METADATA_FIELDS}))
        except (ValueError, TypeError) as err:
            if number == len(lines):
                log.warning("%s: skipping a torn last line (%s)", path, err)
                continue
            raise OutputDirError(f"{path} line {number} is not a dalle-data record ({err})") from None
    return records


def _read_spec(out: Path) -> dict[str, Any]:
    path = out / "spec.yaml"
    if not out.is_dir():
        raise OutputDirError(f"{out} does not exist or is not a directory; pass the --out folder of a run")
    if not path.is_file():
        raise OutputDirError(f"{out} holds no dalle-data run (no spec.yaml); pass the --out folder of a run")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise OutputDirError(f"{path} cannot be read ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise OutputDirError(f"{path} is not a dalle-data spec")
    return data


def run_labels(spec: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """The ClassLabel names of a saved spec, as ``generate`` made them, and the negative label."""
    classes = tuple(str(c) for c in spec["classes"])
    modes = spec.get("modes") or {}
    negative = str(spec.get("negative_label") or "hard_negative") if "adversarial" in modes else None
    return classes + ((negative,) if negative else ()), negative


def load_run(out: Path | str) -> ReviewRun:
    """Read the run in ``out``; one-line ``OutputDirError`` when it cannot be reviewed."""
    out = Path(out)
    spec = _read_spec(out)
    manifest = out / MANIFEST_FILE
    if not manifest.is_file():
        raise OutputDirError(
            f"{out} has no {MANIFEST_FILE} yet: the run has not finished; "
            f"finish it first with `dalle-data generate --resume {out}`"
        )
    labels, negative = run_labels(spec)
    spec_hash = str(spec.get("spec_hash", ""))
    records = read_records(manifest)
    originals = {r.id: r for r in read_records(out / REVIEW_DIR / ORIGINALS_FILE, spec_hash)}
    return ReviewRun(
        out=out, spec_hash=spec_hash, classes=labels[: len(labels) - (1 if negative else 0)],
        labels=labels, negative_label=negative, class_dirs=make_class_dirs(list(labels)),
        split=str(spec.get("split") or "train"), complete=(out / "_SUCCESS").is_file(),
        records=tuple(records), originals=originals,
    )


def count_labels(records: Sequence[Record]) -> dict[str, int]:
    """Kept images per label, in first-seen order."""
    counts: dict[str, int] = {}
    for record in records:
        if record.status == "kept":
            counts[record.label] = counts.get(record.label, 0) + 1
    return counts
