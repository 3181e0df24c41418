"""``review --apply``: write the decisions into the dataset.

What each decision means for a record, starting from its original state (as
``generate`` made it, see ``run``):

* ``accept`` / ``clear`` / no decision: the original state.
* ``reject``: ``status="rejected"``, ``kept=False``, ``reject_reason="review"``.
* ``relabel`` to class C: ``label=C`` (its ``label_id`` and ``class_dir``),
  ``role="positive"``, ``imitates=None``.
* ``hard_negative``: the run's hard-negative label (``negative_label`` in
  ``spec.yaml``), ``role="hard_negative"``, ``imitates`` = the original class:
  the same labelling as an adversarial image.

Every record whose state now differs from that outcome is changed, and only
those, so applying twice changes nothing the second time, and a decision
undone after an apply is carried out by the next one (a rejected image comes
back). On disk, in this order:

1. ``OUT/review/originals.jsonl``: the original state of each record about to
   change for the first time (appended, fsync'd).
2. Parquet: each affected ``parquet/<split>/part-<shard>.parquet`` and its
   twin ``rejected/parquet/part-<shard>.parquet`` are rewritten atomically
   (temporary file, fsync, rename): rejected rows move to the twin, relabeled
   rows get their new ``label`` / ``label_name`` / ``class_dir`` / ``role`` /
   ``imitates``; an emptied file is removed. The schema (ClassLabel names) is
   kept as it is.
3. ImageFolder: each changed PNG is renamed into ``imagefolder/<split>/<class_dir>/``
   or ``rejected/imagefolder/<class_dir>/``; both ``metadata.jsonl`` files are
   rebuilt whole.
4. ``OUT/manifest.jsonl`` rewritten atomically with the new status and labels.
5. ``OUT/review/applied.jsonl``: one line saying what changed.

Rejected images are kept apart, never deleted. A crash anywhere in between
leaves a state from which the next ``--apply`` converges (it finds rows and
files wherever they are). The shard markers (``OUT/shards/``), ``spec.yaml``,
``summary.json`` and ``_SUCCESS`` are left alone, so ``generate`` still finds
the run complete and does nothing.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle_data.errors import OutputDirError
from dalle_data.records import Record
from dalle_data.review.decisions import Decision, DecisionLog, now
from dalle_data.review.images import parquet_candidates, png_candidates
from dalle_data.review.run import (
    APPLIED_FILE,
    MANIFEST_FILE,
    ORIGINALS_FILE,
    ReviewRun,
    count_labels,
)
from dalle_data.writers.base import (
    append_jsonl,
    atomic_open,
    dataset_row,
    disk_error,
    ensure_dir,
    remove_file,
    write_jsonl,
)

log = logging.getLogger(__name__)

REVIEW_REASON = "review"


def outcome(run: ReviewRun, original: Record, decision: Decision | None) -> Record:
    """The state a record should have once ``decision`` is applied to its original state."""
    action = decision.action if decision else "accept"
    if action == "reject":
        return original.replace(status="rejected", kept=False, reject_reason=REVIEW_REASON)
    if action == "relabel" and decision and decision.label in run.classes:
        label = decision.label
        return original.replace(label=label, label_id=run.label_id(label), class_dir=run.class_dirs[label],
                                role="positive", imitates=None)
    if action == "hard_negative" and run.negative_label and original.role == "positive":
        neg = run.negative_label
        return original.replace(label=neg, label_id=run.label_id(neg), class_dir=run.class_dirs[neg],
                                role="hard_negative", imitates=original.label)
    return original


@dataclass(frozen=True)
class Change:
    """One record that ``--apply`` changes: from its state now to the decided one."""

    before: Record
    after: Record
    original: Record

    @property
    def kind(self) -> str:
        if self.after == self.original:
            return "restored"
        if self.after.status == "rejected":
            return "rejected"
        return "hard_negative" if self.after.role == "hard_negative" else "relabeled"

    def as_json(self) -> dict[str, Any]:
        def state(r: Record) -> dict[str, Any]:
            return {"label": r.label, "role": r.role, "status": r.status}

        return {"id": self.before.id, "kind": self.kind, "from": state(self.before), "to": state(self.after)}


@dataclass
class ApplyReport:
    """What an apply did (or, with ``dry_run``, would do)."""

    decisions: int
    changes: list[Change]
    dry_run: bool = False
    parquet_files: int = 0
    images_moved: int = 0
    kept: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counted = Counter(c.kind for c in self.changes)
        return {k: counted.get(k, 0) for k in ("rejected", "relabeled", "hard_negative", "restored")}

    def as_json(self) -> dict[str, Any]:
        return {
            "applied": not self.dry_run and bool(self.changes), "dry_run": self.dry_run,
            "decisions": self.decisions, "changed": len(self.changes), **self.counts(),
            "parquet_files_rewritten": self.parquet_files, "images_moved": self.images_moved,
            "kept": self.kept, "changes": [c.as_json() for c in self.changes],
        }


def plan_changes(run: ReviewRun, decisions: dict[str, Decision]) -> list[Change]:
    """Records whose state now differs from what the decisions ask for, manifest order."""
    changes: list[Change] = []
    for record in run.records:
        original = run.original(record)
        if original.status != "kept":
            continue  # never in review: failed, refused or rejected by generate's filter
        after = outcome(run, original, decisions.get(record.id))
        if after != record:
            changes.append(Change(before=record, after=after, original=original))
    return changes


def apply_decisions(run: ReviewRun, decisions_log: DecisionLog, dry_run: bool = False) -> ApplyReport:
    """Carry out the decisions in force (see the module docstring)."""
    if not run.complete:
        raise OutputDirError(
            f"{run.out} is not a finished run (no _SUCCESS); finish it with "
            f"`dalle-data generate --resume {run.out}` before applying review decisions"
        )
    decisions = decisions_log.replay()
    changes = plan_changes(run, decisions)
    report = ApplyReport(decisions=len(decisions), changes=changes, dry_run=dry_run)
    updated = {c.after.id: c.after for c in changes}
    records = [updated.get(r.id, r) for r in run.records]
    counts = count_labels(records)
    report.kept = {label: counts.get(label, 0) for label in run.labels}
    if dry_run or not changes:
        return report
    _save_originals(run, changes)
    report.parquet_files = _apply_parquet(run, updated, {r.id: i for i, r in enumerate(records)})
    report.images_moved = _apply_imagefolder(run, changes, records)
    write_jsonl(run.out / MANIFEST_FILE, [r.metadata() for r in records])
    append_jsonl(run.review_dir / APPLIED_FILE, {"time": now(), "spec_hash": run.spec_hash,
                                                  **{k: v for k, v in report.as_json().items() if k != "kept"}})
    log.info("applied %d change(s) to %s", len(changes), run.out)
    return report


def _save_originals(run: ReviewRun, changes: Sequence[Change]) -> None:
    for change in changes:
        if change.before.id not in run.originals:
            append_jsonl(run.review_dir / ORIGINALS_FILE, {**change.before.metadata(), "spec_hash": run.spec_hash})
            run.originals[change.before.id] = change.before


# --- Parquet -----------------------------------------------------------------


def _apply_parquet(run: ReviewRun, updated: dict[str, Record], order: dict[str, int]) -> int:
    """Rewrite the shard files holding changed records; returns how many files were written."""
    if not (run.out / "parquet" / run.split).is_dir():
        return 0
    written = 0
    for shard in sorted({r.shard for r in updated.values()}):
        written += _rewrite_shard(parquet_candidates(run, shard), updated, order)
    return written


def _rewrite_shard(paths: list[Path], updated: dict[str, Record], order: dict[str, int]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: list[tuple[int, dict[str, Any]]] = []  # (0 dataset / 1 rejected, row)
    schema = None
    for where, path in enumerate(paths):
        if path.is_file():
            table = pq.read_table(path)
            schema = schema or table.schema
            rows += [(where, row) for row in table.to_pylist()]
    if schema is None:
        return 0
    groups: list[list[dict[str, Any]]] = [[], []]
    changed = False
    for where, row in rows:
        record = updated.get(row["id"])
        if record is not None:
            row.update(dataset_row(record))
            where, changed = (0 if record.status == "kept" else 1), True
        groups[where].append(row)
    if not changed:
        return 0
    written = 0
    for path, group in zip(paths, groups):
        group.sort(key=lambda row: order.get(row["id"], len(order)))
        if group:
            ensure_dir(path.parent)
            with atomic_open(path) as handle:
                pq.write_table(pa.Table.from_pylist(group, schema=schema), handle, row_group_size=100)
            written += 1
        elif path.is_file():
            remove_file(path)
    return written


# --- ImageFolder ---------------------------------------------------------------


def _apply_imagefolder(run: ReviewRun, changes: Sequence[Change], records: Sequence[Record]) -> int:
    """Move changed PNGs, rebuild both metadata files; returns how many PNGs moved."""
    dataset = run.out / "imagefolder" / run.split
    if not dataset.is_dir():
        return 0
    rejected = run.out / "rejected" / "imagefolder"
    moved = sum(_move_png(run, c.after, dataset, rejected) for c in changes)
    for change in changes:  # an emptied class folder would make torchvision's ImageFolder fail
        for root in (dataset, rejected):
            _remove_if_empty(root / change.before.class_dir)
    kept_rows = [_metadata_row(r) for r in records if r.status == "kept"]
    rejected_rows = [_metadata_row(r) for r in records
                     if r.status == "rejected" and (rejected / r.class_dir / f"{r.id}.png").is_file()]
    for directory, rows in ((dataset, kept_rows), (rejected, rejected_rows)):
        if rows:
            write_jsonl(directory / "metadata.jsonl", rows)
        else:
            remove_file(directory / "metadata.jsonl")
    return moved


def _metadata_row(record: Record) -> dict[str, Any]:
    return {"file_name": f"{record.class_dir}/{record.id}.png", **dataset_row(record)}


def _move_png(run: ReviewRun, record: Record, dataset: Path, rejected: Path) -> bool:
    target = (dataset if record.status == "kept" else rejected) / record.class_dir / f"{record.id}.png"
    if target.is_file():
        return False
    for candidate in png_candidates(run, record.id):
        if candidate.is_file():
            ensure_dir(target.parent)
            try:
                os.replace(candidate, target)
                _fsync_dir(target.parent)
                _fsync_dir(candidate.parent)
            except OSError as exc:
                raise disk_error(target, exc) from exc
            return True
    log.warning("image of record %s not found in the ImageFolder tree; only its indexes change", record.id)
    return False


def _remove_if_empty(folder: Path) -> None:
    try:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    except OSError as exc:
        log.warning("cannot remove the empty folder %s: %s", folder, exc)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (a power cut after it keeps it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
