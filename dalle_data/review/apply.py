"""``review --apply``: write the decisions into the dataset, crash-safe.

What each decision means for a record, starting from its original state (as
``generate`` made it, see ``run``):

* ``accept`` / ``clear`` / no decision: the original state, unless ``dedup``
  set the image aside as a near-duplicate (``OUT/review/dedup.json``): then
  ``status="rejected"``, ``reject_reason="duplicate"``. A person's decision
  on an image wins over dedup's.
* ``reject``: ``status="rejected"``, ``kept=False``, ``reject_reason="review"``.
* ``relabel`` to class C: ``label=C`` (its ``label_id`` and ``class_dir`` from
  the run's label map), ``role="positive"``, ``imitates=None``.
* ``hard_negative``: the run's hard-negative label (``negative_label`` in
  ``spec.yaml``), ``role="hard_negative"``, ``imitates`` = the original class:
  the same labelling as an adversarial image.

Every record whose state now differs from that outcome is changed, and only
those, so applying twice changes nothing the second time, and a decision
undone after an apply is carried out by the next one (a rejected image comes
back). Rejected images are kept apart (``OUT/rejected/``), never deleted.

Crash safety: an intent journal (``OUT/review/apply-journal.json``) is written
before any dataset file changes, and the new Parquet files are written in
full beside the old ones (``.apply-<name>.staged``) before any of them
replaces one:

1. journal ``planned`` (the changed records' new states), originals saved;
2. staged Parquet files written (each shard and its ``rejected/`` twin);
3. journal ``staged``: from here the apply is rolled forward, never back;
4. staged files renamed over the old ones (an emptied file is removed);
5. each changed PNG renamed into its new folder (one atomic rename);
6. ``metadata.jsonl`` files, class folders and the card rebuilt; the manifest rewritten;
7. a line in ``OUT/review/applied.jsonl``; the journal removed.

A kill before 3 is rolled back (staged files removed: nothing had changed);
after 3 it is rolled forward. Either happens at the next apply, and whenever
a command opens the run with its lock free (``recover``), so after any kill
every image is in exactly one place. Apply holds the run lock throughout.
The shard markers, ``spec.yaml``, ``summary.json`` and ``_SUCCESS`` are left
alone, so ``generate`` still finds the run finished and does nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle_data import faults
from dalle_data.errors import OutputDirError
from dalle_data.records import Record, validate_record
from dalle_data.review.decisions import Decision, DecisionLog, now
from dalle_data.review.images import png_candidates
from dalle_data.review.run import (
    APPLIED_FILE,
    ORIGINALS_FILE,
    REVIEW_DIR,
    ReviewRun,
    count_labels,
    load_run,
)
from dalle_data.rundir.layout import DEDUP_FILE, JOURNAL_FILE
from dalle_data.rundir.lock import RunLock, RunLocked
from dalle_data.writers.base import (
    WriterContext,
    append_jsonl,
    atomic_write_bytes,
    destination,
    disk_error,
    ensure_dir,
    remove_file,
    write_jsonl,
)
from dalle_data.summary import EXIT_OK, EXIT_SHORT
from dalle_data.writers.imagefolder import write_indexes
from dalle_data.writers.parquet import ParquetWriter, read_part, record_of_row


log = logging.getLogger(__name__)

REVIEW_REASON = "review"
DUPLICATE_REASON = "duplicate"


def set_aside(run: ReviewRun) -> frozenset[str]:
    """The ids ``dedup`` set aside as near-duplicates (``OUT/review/dedup.json``; none without it)."""
    path = run.review_dir / DEDUP_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError) as err:
        raise OutputDirError(f"{path} cannot be read ({err}); remove it with `dalle-data dedup {run.out} --undo`, "
                             "or rerun dedup") from None
    if not isinstance(data, dict) or data.get("spec_hash") != run.spec_hash or not isinstance(data.get("set_aside"), list):
        raise OutputDirError(f"{path} is not this run's dedup file; remove it with `dalle-data dedup {run.out} --undo`")
    return frozenset(str(i) for i in data["set_aside"])


def outcome(run: ReviewRun, original: Record, decision: Decision | None, duplicate: bool = False) -> Record:
    """The state a record should have once ``decision`` (and dedup) is applied to its original state."""
    if decision is None and duplicate:
        return original.replace(status="rejected", kept=False, reject_reason=DUPLICATE_REASON)
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
            return "duplicate" if self.after.reject_reason == DUPLICATE_REASON else "rejected"
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
        return {k: counted.get(k, 0) for k in ("rejected", "duplicate", "relabeled", "hard_negative", "restored")}

    def as_json(self) -> dict[str, Any]:
        return {
            "applied": not self.dry_run and bool(self.changes), "dry_run": self.dry_run,
            "decisions": self.decisions, "changed": len(self.changes), **self.counts(),
            "parquet_files_rewritten": self.parquet_files, "images_moved": self.images_moved,
            "kept": self.kept, "changes": [c.as_json() for c in self.changes],
        }


def plan_changes(run: ReviewRun, decisions: dict[str, Decision],
                 duplicates: frozenset[str] | None = None) -> list[Change]:
    """Records whose state now differs from what the decisions (and dedup) ask for, manifest order."""
    duplicates = set_aside(run) if duplicates is None else duplicates
    changes: list[Change] = []
    for record in run.records:
        original = run.original(record)
        if original.status != "kept":
            continue  # never in review: failed, refused or rejected by generate's filter
        after = outcome(run, original, decisions.get(record.id), record.id in duplicates)
        if after != record:
            changes.append(Change(before=record, after=after, original=original))
    return changes


def apply_decisions(run: ReviewRun, decisions_log: DecisionLog, dry_run: bool = False,
                    locked: bool = False) -> ApplyReport:
    """Carry out the decisions in force (see the module docstring); takes the run lock unless ``locked``."""
    if not run.ended:
        raise OutputDirError(
            f"{run.out} is not a finished run (no summary.json); finish it with "
            f"`dalle-data generate --resume {run.out}` before applying review decisions"
        )
    if not run.labels_saved:
        raise OutputDirError(f"{run.out} was made by an older dalle-data (no labels.json); "
                             f"run `dalle-data verify {run.out} --repair` once, then apply")
    if dry_run:
        return _report(run, decisions_log, dry_run=True)[0]
    with contextlib.nullcontext() if locked else RunLock(run.out, "dalle-data review --apply"):
        report, changes = _report(run, decisions_log)  # before a cut-off apply is finished: report it too
        if recover(run.out, locked=True):
            run = load_run(run.out)
            changes = plan_changes(run, decisions_log.replay())
        if changes:
            _carry_out(run, changes, report)
    return report


def _report(run: ReviewRun, decisions_log: DecisionLog, dry_run: bool = False) -> tuple[ApplyReport, list[Change]]:
    decisions = decisions_log.replay()
    changes = plan_changes(run, decisions)
    report = ApplyReport(decisions=len(decisions), changes=changes, dry_run=dry_run)
    updated = {c.after.id: c.after for c in changes}
    counts = count_labels([updated.get(r.id, r) for r in run.records])
    report.kept = {label: counts.get(label, 0) for label in run.labels}
    return report, changes


def _carry_out(run: ReviewRun, changes: Sequence[Change], report: ApplyReport) -> None:
    journal = Journal(run.review_dir / JOURNAL_FILE)
    state = {"version": 1, "id": secrets.token_hex(6), "spec_hash": run.spec_hash, "phase": "planned",
             "changes": [c.after.metadata() for c in changes], "staged": []}
    journal.write(state)
    faults.point("apply_journal")
    _save_originals(run, changes)
    state["staged"] = _stage_parquet(run, {c.after.id: c.after for c in changes})
    state["phase"] = "staged"
    journal.write(state)
    faults.point("apply_staged")
    moved = _roll_forward(run, state)
    report.parquet_files += len(state["staged"])
    report.images_moved += moved
    log.info("applied %d change(s) to %s", len(changes), run.out)
    append_jsonl(run.review_dir / APPLIED_FILE, {"time": now(), "spec_hash": run.spec_hash, "journal": state["id"],
                                                  **{k: v for k, v in report.as_json().items() if k != "kept"}})
    journal.remove()


def recover(out: Path, *, locked: bool = False) -> bool:
    """Finish or undo an apply that was cut off (see the module docstring); True if there was one.

    Without ``locked`` it takes the run lock, and leaves the journal alone
    when another process holds it (that apply is still running).
    """
    path = Path(out) / REVIEW_DIR / JOURNAL_FILE
    if not path.is_file():
        return False
    if not locked:
        try:
            with RunLock(Path(out), "dalle-data (finishing a cut-off review --apply)"):
                return recover(out, locked=True)
        except RunLocked:
            return False
    journal = Journal(path)
    state = journal.read()
    run = load_run(out)
    if state is None or state.get("spec_hash") != run.spec_hash:
        log.warning("ignoring an apply journal of another run: %s", path)
        journal.remove()
        return False
    if state.get("phase") == "staged":
        log.warning("finishing a review --apply that was cut off (%s)", path)
        _roll_forward(run, state)
        append_jsonl(run.review_dir / APPLIED_FILE, {"time": now(), "spec_hash": run.spec_hash,
                                                      "journal": state.get("id"), "recovered": True})
    else:
        log.warning("undoing a review --apply that was cut off before it changed anything (%s)", path)
        for leftover in _staged_files(run):
            with contextlib.suppress(OSError):
                leftover.unlink()
    journal.remove()
    return True


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, state: dict[str, Any]) -> None:
        ensure_dir(self.path.parent)
        atomic_write_bytes(self.path, json.dumps(state, ensure_ascii=False).encode("utf-8"))

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def remove(self) -> None:
        remove_file(self.path)


def _save_originals(run: ReviewRun, changes: Sequence[Change]) -> None:
    for change in changes:
        if change.before.id not in run.originals:
            append_jsonl(run.review_dir / ORIGINALS_FILE, {**change.before.metadata(), "spec_hash": run.spec_hash})
            run.originals[change.before.id] = change.before


# --- Parquet: staged in full, then renamed ------------------------------------------


def _writer_ctx(run: ReviewRun) -> WriterContext:
    labels = run.label_map
    assert labels is not None
    return WriterContext(out_dir=run.out, class_names=labels.names, class_dirs=labels.folders, split=run.split,
                         keep_rejected=run.keep_rejected)


def _staged_name(path: Path) -> Path:
    return path.with_name(f".apply-{path.name}.staged")


def _staged_files(run: ReviewRun) -> list[Path]:
    layout = run.layout
    return [p for where in ("dataset", "rejected") for p in layout.parquet_dir(where).glob(".apply-*.staged")]


def _stage_parquet(run: ReviewRun, updated: dict[str, Record]) -> list[dict[str, str | None]]:
    """Write the new version of every Parquet file holding a changed record beside the old one."""
    if "parquet" not in run.formats:
        return []
    ctx, layout = _writer_ctx(run), run.layout
    if not layout.parquet_dir().is_dir():
        return []
    writer = ParquetWriter(ctx)
    staged: list[dict[str, str | None]] = []
    order = {r.id: i for i, r in enumerate(run.records)}
    for shard in sorted({r.shard for r in updated.values()}):
        paths = {where: layout.parquet_part(shard, where) for where in ("dataset", "rejected")}
        records = [record_of_row(row) for p in paths.values() if p.is_file() for row in read_part(p)]
        if not records:
            continue
        groups: dict[str, list[Record]] = {"dataset": [], "rejected": []}
        for record in records:
            new = updated.get(record.id)
            if new is not None:
                record = new.replace(image=record.image, sha256=record.sha256 or new.sha256)
            where = destination(record, ctx)
            if where is not None:
                groups[where].append(record)
        for where, path in paths.items():
            group = sorted(groups[where], key=lambda r: order.get(r.id, len(order)))
            final = path.relative_to(run.out).as_posix()  # relative: a moved run still finishes its apply
            if group:
                writer.write_part(_staged_name(path), group)
                faults.point("apply_stage")
                staged.append({"final": final, "staged": _staged_name(path).relative_to(run.out).as_posix(),
                               "ids": [r.id for r in group]})
            elif path.is_file():
                staged.append({"final": final, "staged": None, "ids": []})
    return staged


def _roll_forward(run: ReviewRun, state: dict[str, Any]) -> int:
    """Steps 4-6 of the module docstring, each idempotent; returns how many PNGs were moved."""
    for entry in state.get("staged", []):
        final = run.layout.contained(run.out / entry["final"])
        staged = run.layout.contained(run.out / entry["staged"]) if entry.get("staged") else None
        if staged is None:
            remove_file(final)
        elif staged.is_file():
            _replace(staged, final)
        elif _ids_in(final) != list(entry.get("ids", [])):
            raise OutputDirError(f"cannot finish the review --apply that was cut off: {staged} is missing and "
                                 f"{final} does not hold what it should; see `dalle-data verify {run.out}`")
        faults.point("apply_parquet")
    updated = {}
    for row in state.get("changes", []):
        record = validate_record(row, "apply journal")
        updated[record.id] = record
    records = [updated.get(r.id, r) for r in run.records]
    moved = _apply_imagefolder(run, list(updated.values()), records)
    write_jsonl(run.layout.manifest, [r.metadata() for r in records])
    faults.point("apply_manifest")
    refresh_summary(run, records)
    return moved


def refresh_summary(run: ReviewRun, records: Sequence[Record]) -> None:
    """``summary.json`` and ``_SUCCESS`` after review: a class that fell under its quota makes the run short.

    Kept images count for the class they were made for (a hard negative: the class it imitates); the
    generation's counts of attempts stay as they were.
    """
    import json

    layout = run.layout
    try:
        summary = json.loads(layout.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(summary, dict) or summary.get("spec_hash") != run.spec_hash or "classes" not in summary:
        return
    kept: dict[str, int] = {}
    by_mode: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for record in records:
        if record.status == "kept":
            cls = record.imitates or record.label
            kept[cls] = kept.get(cls, 0) + 1
            by_mode[record.mode] = by_mode.get(record.mode, 0) + 1
        elif record.reject_reason:
            reasons[record.reject_reason] = reasons.get(record.reject_reason, 0) + 1
    for cls, row in summary["classes"].items():
        row["kept"] = kept.get(cls, 0)
        row["rejected"] = row["generated"] - row["kept"] - row.get("failed", 0)
        row["acceptance"] = round(row["kept"] / row["generated"], 4) if row["generated"] else 0.0
        row["met"] = row["kept"] >= row["target"]
    for mode, row in summary.get("modes", {}).items():
        row["kept"] = by_mode.get(mode, 0)
        row["rejected"] = row["generated"] - row["kept"] - row.get("failed", 0)
    complete = all(row["met"] for row in summary["classes"].values())
    summary.update(kept=sum(kept.values()), rejections=reasons, complete=complete, review_applied=True,
                   status="complete" if complete else "short", exit_code=EXIT_OK if complete else EXIT_SHORT)
    summary["rejected"] = summary["generated"] - summary["kept"] - summary.get("failed", 0)
    summary["acceptance"] = round(summary["kept"] / summary["generated"], 4) if summary["generated"] else 0.0
    atomic_write_bytes(layout.summary, (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    if complete:
        atomic_write_bytes(layout.success, b"")
    else:
        remove_file(layout.success)


def _ids_in(path: Path) -> list[str] | None:
    import pyarrow.parquet as pq

    try:
        return [str(i) for i in pq.read_table(path, columns=["id"]).column("id").to_pylist()]
    except (OSError, ValueError):
        return None


def _replace(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise disk_error(target, exc) from exc


# --- ImageFolder: one rename per image, then the indexes ------------------------------


def _apply_imagefolder(run: ReviewRun, changed: Sequence[Record], records: Sequence[Record]) -> int:
    """Move changed PNGs, rebuild both metadata files, folders and card; returns how many PNGs moved."""
    if "imagefolder" not in run.formats or not run.layout.images_dir().is_dir():
        return 0
    ctx = _writer_ctx(run)
    moved = 0
    for record in changed:
        moved += _move_png(run, record, ctx)
    present = [r for r in records if destination(r, ctx) != "rejected"
               or run.layout.png(r.class_dir, r.id, "rejected").is_file()]
    write_indexes(ctx, present, owned={r.id for r in records})
    return moved


def _move_png(run: ReviewRun, record: Record, ctx: WriterContext) -> bool:
    where = destination(record, ctx)
    if where is None:
        return False
    target = run.layout.png(record.class_dir, record.id, where)  # type: ignore[arg-type]
    if target.is_file():
        return False
    for candidate in png_candidates(run, record.id):
        if candidate.is_file():
            ensure_dir(target.parent)
            _replace(candidate, target)
            _fsync_dir(candidate.parent)
            faults.point("apply_move")
            return True
    log.warning("image of record %s not found in the ImageFolder tree; only its indexes change", record.id)
    return False


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (a power cut after it keeps it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
