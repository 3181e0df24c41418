"""A finished run as review sees it: its labels, its records, their original state.

``load_run(OUT)`` reads the run through ``dalle_data.rundir.open_run`` (the
spec validated and its hash checked, the label map), ``OUT/manifest.jsonl``
(every record as it is now) and
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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle_data.errors import OutputDirError
from dalle_data.labels import LabelMap
from dalle_data.records import Record
from dalle_data.rundir import Layout, open_run
from dalle_data.rundir.layout import (  # noqa: F401 - the run directory's file names, under review's names
    APPLIED_FILE, DECISIONS_FILE, MANIFEST_FILE, ORIGINALS_FILE, REVIEW_DIR,
)
from dalle_data.rundir.reader import Run

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ReviewRun:
    """One run directory: labels, folder names, and every record now and originally."""

    out: Path
    spec_hash: str
    classes: tuple[str, ...]  # the run's classes, in the order given: the targets of a relabel
    labels: tuple[str, ...]  # ClassLabel names in id order (the run's label map)
    negative_label: str | None  # the run's hard-negative label, when the run has one
    class_dirs: dict[str, str]
    split: str
    complete: bool  # ended with every quota met
    records: tuple[Record, ...]  # manifest order, as they are now
    originals: dict[str, Record] = field(default_factory=dict)  # id -> state before the first apply
    ended: bool = True  # summary.json says the run ended (complete or short)
    label_map: LabelMap | None = None
    formats: tuple[str, ...] = ("parquet", "imagefolder")
    keep_rejected: bool = False
    labels_saved: bool = True  # made by a dalle-data that writes labels.json
    spec: Any = field(default=None, repr=False, compare=False)  # the validated RunSpec (open_run's)
    by_id: dict[str, Record] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {r.id: r for r in self.records})
        if self.label_map is None:
            object.__setattr__(self, "label_map", LabelMap.build(
                [c for c in self.labels if c != self.negative_label], self.negative_label))

    @property
    def review_dir(self) -> Path:
        return self.out / REVIEW_DIR

    @property
    def layout(self) -> Layout:
        return Layout(self.out, self.split)

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


def load_run(out: Path | str) -> ReviewRun:
    """Read and check the run in ``out`` (see ``dalle_data.rundir.open_run``); one-line errors. A cut-off
    ``review --apply`` is the opening command's to finish (``review.apply.recover``), not the reader's."""
    return review_run_of(open_run(out))


def review_run_of(run: Run) -> ReviewRun:
    """The review view of a run already opened with ``open_run`` (its manifest, originals)."""
    if not run.layout.manifest.is_file():
        raise OutputDirError(
            f"{run.out} has no {MANIFEST_FILE} yet: the run has not finished; "
            f"finish it first with `dalle-data generate --resume {run.out}`"
        )
    labels = run.labels
    records = run.records()
    originals = run.originals()
    return ReviewRun(
        out=run.out, spec_hash=run.spec_hash, classes=tuple(run.spec.classes), labels=labels.names,
        negative_label=labels.negative_label, class_dirs=labels.folder_map(), split=run.spec.split,
        complete=run.complete, records=tuple(records), originals=originals, ended=run.ended, label_map=labels,
        formats=tuple(run.spec.formats), keep_rejected=run.spec.keep_rejected, labels_saved=run.labels_saved,
        spec=run.spec,
    )


def with_applied(run: Run, records: Sequence[Record]) -> list[Record]:
    """``records`` as generated (their shard markers), each in the state ``review --apply`` or ``dedup`` last
    gave it: rebuilding a run's indexes (``merge``) starts from both, so no rebuild undoes a decision.

    A record an apply changed has its original in ``originals.jsonl``; its state now is its manifest line
    (written by the apply, crash-safe). Originals of another generation of the same id are ignored.
    """
    originals = run.originals()
    if not originals or not run.layout.manifest.is_file():
        return list(records)
    now = {r.id: r for r in run.records()}
    out = []
    for record in records:
        original, current = originals.get(record.id), now.get(record.id)
        applied = original is not None and current is not None and \
            original.created_at == record.created_at == current.created_at
        out.append(current if applied and current is not None else record)
    return out


def count_labels(records: Sequence[Record]) -> dict[str, int]:
    """Kept images per label, in first-seen order."""
    counts: dict[str, int] = {}
    for record in records:
        if record.status == "kept":
            counts[record.label] = counts.get(record.label, 0) + 1
    return counts
