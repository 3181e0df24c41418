"""``dalle-data verify``: check a finished run against its records, and mend it with ``--repair``.

The records are the truth: the shard markers (what was generated) and the
manifest (their state now, after review). ``verify`` checks every file
against them: every Parquet row decodes, carries the record's label and the
image bytes the record's hash names; every ImageFolder image exists where
the record's state puts it, with the same hash; ``metadata.jsonl``, the card,
``labels.json`` and the manifest say what the records say; no temporary
files lie around. Images that no record places where they are (this run's
ids only) are flagged; files dalle-data did not write are ignored.

``repair`` rewrites what can be rebuilt from the other copy of an image
(Parquet from the PNGs, PNGs from Parquet, indexes from the records), and
regenerates, deterministically, the shards whose images are lost from both
(the same units, seeds and batches as the first time: the same bytes on the
same hardware and versions). ``quick_check`` is the cheap part (counts,
sizes, Parquet footers) that a rerun of ``generate`` does before it calls a
run finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle_data.errors import OutputDirError
from dalle_data.records import Record
from dalle_data.review.apply import recover
from dalle_data.rundir import Run, open_run
from dalle_data.rundir.directory import atomic_write_text
from dalle_data.rundir.layout import WHERES
from dalle_data.rundir.lock import RunLock
from dalle_data.rundir.shards import ShardStore
from dalle_data.summary import Summary, rebuild
from dalle_data.writers import FORMATS, outputs_of
from dalle_data.writers.base import ReadBack, WriterContext, destination, remove_file, write_jsonl
from dalle_data.writers.formats import formats_of

log = logging.getLogger(__name__)

Regenerate = Callable[[Run, set[str]], dict[str, bytes]]


@dataclass
class Finding:
    """One thing wrong, in words, and what repair does about it."""

    what: str
    fix: str  # "rewrite" | "regenerate" | "index" | "remove" | "apply" | "marker"

    def as_json(self) -> dict[str, str]:
        return {"problem": self.what, "repair": self.fix}


@dataclass
class Report:
    out: Path
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, what: str, fix: str) -> None:
        self.findings.append(Finding(what, fix))

    def as_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "ok": self.ok, "checked": self.checked,
                "problems": [f.as_json() for f in self.findings], "repaired": self.repaired}


def writer_context(run: Run) -> WriterContext:
    return WriterContext(out_dir=run.out, class_names=run.labels.names, class_dirs=run.labels.folders,
                         split=run.spec.split, keep_rejected=run.spec.keep_rejected)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decodes(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def good(record: Record, data: bytes | None) -> bool:
    """``data`` is this record's image: it decodes and has the recorded hash (when one was recorded)."""
    return data is not None and (record.sha256 is None or sha256(data) == record.sha256) and decodes(data)


# --- quick check ------------------------------------------------------------------------


def quick_check(out: Path) -> list[str]:
    """Cheap checks of a finished run: every file there, counts agreeing; the problems found, in words."""
    recover(out)  # a cut-off review --apply is finished first (commands do this, the reader does not)
    run = open_run(out)
    problems: list[str] = []
    if not run.labels_saved:
        problems.append("it was made before labels.json existed: its label ids follow the class order given")
    if not _summary_current(run.summary):
        problems.append("its summary.json is not in the current schema")
    layout = run.layout
    if not layout.manifest.is_file():
        return problems + ["manifest.jsonl is missing"]
    records = run.records()
    ctx = writer_context(run)
    placed = {where: {r.id for r in records if destination(r, ctx) == where} for where in WHERES}
    for where, ids in placed.items():
        for fmt in formats_of(run.spec.formats):
            fmt.quick_check(ctx, where, ids, problems)
    leftovers = list(out.rglob(".tmp-*.part"))
    if leftovers:
        problems.append(f"{len(leftovers)} temporary file(s) left, e.g. {leftovers[0]}")
    return problems


def _summary_current(summary: Any) -> bool:
    try:
        Summary.model_validate(summary)
        return True
    except ValueError:
        return False


# --- the full check ---------------------------------------------------------------------


class Checker:
    """Reads everything once; ``findings`` and what repair needs (records, image bytes by copy)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.layout = run.layout
        self.ctx = writer_context(run)
        self.report = Report(run.out)
        self.records: list[Record] = []
        self.shards: set[str] = set()
        self.found: dict[str, ReadBack] = {}  # format name -> what its check found
        self.lost: set[str] = set()
        self.lost_markers: dict[str, list[Record]] = {}  # shard -> its records now (manifest), marker deleted

    def check(self) -> Report:
        self._records()
        if self.records:
            for fmt in formats_of(self.run.spec.formats):
                found = self.found[fmt.name] = fmt.check(self.ctx, self.records, self.shards, good)
                for what, fix in found.problems:
                    self.report.add(what, fix)
            self._lost()
        self._run_files()
        report = self.report
        report.checked = {"records": len(self.records), "shards": len(self.shards)}
        report.checked.update({fmt.checked_as: len(self.found[name].images) if name in self.found else 0
                               for name, fmt in FORMATS.items()})
        return report

    def images(self) -> dict[str, bytes]:
        """The good image bytes found in every format (the first format's copy where several hold one)."""
        out: dict[str, bytes] = {}
        for found in reversed(list(self.found.values())):
            out.update(found.images)
        return out

    def strays(self) -> list[Path]:
        return [path for found in self.found.values() for path in found.strays]

    # records: markers and manifest
    def _records(self) -> None:
        store = ShardStore(self.layout, self.run.labels)
        generated: dict[str, Record] = {}
        for shard in store.shards():
            try:
                for record in store.read(shard):
                    generated[record.id] = record
                self.shards.add(shard)
            except (ValueError, OutputDirError) as err:
                self.report.add(f"shard marker {self.layout.marker(shard)} does not hold up ({err})", "regenerate")
        try:
            current = self.run.records()
        except OutputDirError as err:
            self.report.add(f"{self.layout.manifest} does not hold up ({err})", "index")
            current = []
        by_id = {r.id: r for r in current}
        self._lost_markers(store, current, generated)
        if set(by_id) != set(generated) and generated:
            self.report.add(f"{self.layout.manifest} lists {len(by_id)} record(s), the shard markers "
                            f"{len(generated)}", "index")
            current = [by_id.get(i, r) for i, r in generated.items()]
        self.records = current or list(generated.values())

    def _lost_markers(self, store: Any, current: list[Record], generated: dict[str, Record]) -> None:
        """Shards the manifest lists whose marker is gone: their records are taken from the manifest (repair
        writes the marker again), so their files are still checked and counted as the run's."""
        listed: dict[str, list[Record]] = {}
        for record in current:
            if record.id not in generated:
                listed.setdefault(record.shard, []).append(record)
        for shard, records in sorted(listed.items()):
            if shard in self.shards or store.layout.marker(shard).is_file():
                continue
            self.report.add(f"shard marker {self.layout.marker(shard)} is missing (its {len(records)} record(s) "
                            "are in the manifest)", "marker")
            self.lost_markers[shard] = records
            self.shards.add(shard)
            generated.update((r.id, r) for r in records)

    def _lost(self) -> None:
        for record in self.records:
            if destination(record, self.ctx) is None:
                continue
            if not any(record.id in found.images for found in self.found.values()):
                self.lost.add(record.shard)
        if self.lost:
            self.report.add(f"images lost from every format in {len(self.lost)} shard(s): "
                            f"{', '.join(sorted(self.lost)[:5])}", "regenerate")

    # run files
    def _run_files(self) -> None:
        layout = self.layout
        if not self.run.labels_saved:
            self.report.add(f"{layout.labels} is missing (a run made before it existed: label ids follow the "
                            "class order given); repair renumbers every format to the one label map", "index")
        for leftover in [*self.run.out.rglob(".tmp-*.part"), *self.run.out.rglob(".apply-*.staged")]:
            self.report.add(f"temporary file {leftover} is left over", "remove")
        if layout.apply_journal.is_file():
            self.report.add("a review --apply was cut off", "apply")
        if self.records and self.run.summary is not None:
            if bool(self.run.summary.get("complete")) != layout.success.is_file():
                self.report.add(f"{layout.success} disagrees with summary.json", "index")
            if not _summary_current(self.run.summary):
                self.report.add(f"{layout.summary} is not in the current schema (an older run?)", "index")


def verify(out: Path) -> Report:
    """Check the run in ``out`` (see the module docstring)."""
    run = _open_ended(out)
    return Checker(run).check()


def _open_ended(out: Path) -> Run:
    recover(out)
    run = open_run(out)
    if not run.ended:
        raise OutputDirError(f"{out} is not a finished run (no summary.json for its spec); finish it with "
                             f"`dalle-data generate --resume {out}`")
    return run


# --- repair ------------------------------------------------------------------------------


def repair(out: Path, regenerate: Regenerate | None = None) -> Report:
    """Mend the run in ``out`` under its lock; returns the report of a fresh check afterwards."""
    open_run(Path(out))  # a run at all? (nothing is written into a folder that is not one)
    with RunLock(Path(out), "dalle-data verify --repair"):
        return repair_locked(Path(out), regenerate)


def repair_locked(out: Path, regenerate: Regenerate | None = None) -> Report:
    recover(out, locked=True)
    run = _open_ended(out)
    checker = Checker(run)
    before = checker.check()
    repaired: dict[str, int] = {}
    if before.ok:
        return before
    for leftover in [*out.rglob(".tmp-*.part"), *out.rglob(".apply-*.staged")]:
        leftover.unlink(missing_ok=True)
        repaired["temporary files removed"] = repaired.get("temporary files removed", 0) + 1
    if checker.lost_markers:
        _restore_markers(run, checker.lost_markers)
        repaired["shard markers restored"] = len(checker.lost_markers)
    images = checker.images()
    images.update(_stray_bytes(checker))
    lost = {r.shard for r in checker.records if destination(r, checker.ctx) is not None and r.id not in images}
    if lost:
        if regenerate is None:
            raise OutputDirError(f"images of {len(lost)} shard(s) are lost from every format; "
                                 f"rerun `dalle-data verify {out} --repair` where the models can load")
        fresh = regenerate(run, lost)
        wanted = {r.id for r in checker.records if r.shard in lost and destination(r, checker.ctx) is not None}
        if wanted - set(fresh):
            raise OutputDirError(f"regenerating {len(lost)} shard(s) did not make {len(wanted - set(fresh))} of their "
                                 "images again (the run's inputs changed?); they cannot be restored: rerun the "
                                 "whole run with --overwrite to remake them")
        for record in checker.records:
            if record.shard in lost and record.id in fresh and destination(record, checker.ctx) is not None:
                if record.sha256 is not None and sha256(fresh[record.id]) != record.sha256:
                    raise OutputDirError(f"regenerating {record.id} gave other bytes than the first time "
                                         "(other hardware or library versions?); the lost images cannot be restored "
                                         "exactly: rerun the whole run with --overwrite to remake them")
                images[record.id] = fresh[record.id]
        repaired["shards regenerated"] = len(lost)
    repaired.update(_rewrite(checker, images))
    log.info("repaired %s: %s", out, repaired)
    after = Checker(open_run(out)).check()
    after.repaired = repaired
    return after


def _restore_markers(run: Run, lost: dict[str, list[Record]]) -> None:
    """Write deleted shard markers again from the manifest, each record in its original state (as generated:
    an apply's changes are the manifest's, never the marker's)."""
    originals = run.originals()
    store = ShardStore(run.layout, run.labels)
    for shard, records in lost.items():
        made = [originals[r.id] if r.id in originals and originals[r.id].created_at == r.created_at else r
                for r in records]
        store.commit(shard, [r.replace(image=None) for r in made])


def _stray_bytes(checker: Checker) -> dict[str, bytes]:
    out = {}
    by_id = {r.id: r for r in checker.records}
    for path in checker.strays():
        data = path.read_bytes()
        if good(by_id[path.stem], data):
            out[path.stem] = data
    return out


def _rewrite(checker: Checker, images: dict[str, bytes]) -> dict[str, int]:
    """Every format rewritten from the records and the good image bytes; returns counts."""
    run, ctx, layout = checker.run, checker.ctx, checker.layout
    records = [r.replace(image=images.get(r.id), sha256=r.sha256 or (sha256(images[r.id]) if r.id in images else None))
               for r in checker.records]
    counts: dict[str, int] = {}
    for fmt in formats_of(run.spec.formats):
        counts.update(fmt.repair(ctx, records, checker.found.get(fmt.name, ReadBack()), not run.labels_saved))
    write_jsonl(layout.manifest, [r.replace(image=None).metadata() for r in records])
    atomic_write_text(layout.labels, run.labels.to_text(run.spec_hash))
    _upgrade_summary(run, checker)
    run = open_run(run.out)
    if run.summary is not None:
        if run.summary.get("complete"):
            atomic_write_text(layout.success, "")
        else:
            remove_file(layout.success)
    counts["indexes rebuilt"] = 1
    return counts


def _upgrade_summary(run: Run, checker: Checker) -> None:
    """A ``summary.json`` of an older format (or damaged) is rebuilt from the records in today's schema."""
    import json

    try:
        Summary.model_validate(run.summary)
        return
    except ValueError:
        pass
    store = ShardStore(run.layout, run.labels)
    generated = [r for shard in sorted(checker.shards) for r in store.read(shard)]
    summary = rebuild(run, generated or checker.records, outputs_of(run.spec))
    atomic_write_text(run.layout.summary, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def describe(report: Report) -> Iterable[str]:
    yield f"{report.out}: {'OK' if report.ok else f'{len(report.findings)} problem(s)'} " + \
        ", ".join(f"{v} {k}" for k, v in report.checked.items())
    for finding in report.findings:
        yield f"  {finding.what}  [repair: {finding.fix}]"
    for what, n in report.repaired.items():
        yield f"  repaired: {n} {what}"


def as_json_text(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2, ensure_ascii=False)
