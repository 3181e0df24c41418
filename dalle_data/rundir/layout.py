"""Every path of a run directory, in one place.

Nothing else in dalle-data spells out where a run's files lie: writers,
review, verify, probe and report ask a ``Layout``. Every path is built from
the run's own validated names (the split, the label map's folders, record
ids, shard ids), and ``contained`` checks that a path stays inside ``OUT``::

    OUT/spec.yaml                    the validated spec, with its hash (rerun: --config OUT/spec.yaml)
    OUT/run.json                     the run's identity: run id, spec hash and content (dalle-data's own)
    OUT/labels.json                  the one label map (id, label, folder, role)
    OUT/runlog.jsonl                 one line per start and end of a run
    OUT/summary.json                 what --json prints; written when the run ends
    OUT/_SUCCESS                     written last, only when every quota was met
    OUT/manifest.jsonl               one line per record, whatever became of it
    OUT/shards/<shard>.intent.json   the record ids a shard is about to write (before any of its files)
    OUT/shards/<shard>.jsonl         the shard's completion marker: its records (written last)
    OUT/parquet/<split>/part-<shard>.parquet        kept images
    OUT/imagefolder/<split>/<folder>/<id>.png       kept images, + metadata.jsonl
    OUT/imagefolder/README.md                       card: features and a content fingerprint
    OUT/rejected/parquet/part-<shard>.parquet       rejected images (--keep-rejected, review)
    OUT/rejected/imagefolder/<folder>/<id>.png      rejected images, + metadata.jsonl
    OUT/embeddings/<shard>.npz       the scorer's image embeddings and class probabilities (dalle_data.embeddings)
    OUT/embeddings/text/vocabulary.npz  the scorer's text embeddings of a wider vocabulary (analysis.lookalike)
    OUT/README.md                    the dataset card (Hugging Face convention; `dalle-data report`)
    OUT/report/index.html            the visual report, + report.json (and probe.json after a probe)
    OUT/review/                      decisions, originals, the apply journal and log; dedup.json
    OUT/.dalle-data.lock             the lock a process holds while it changes OUT
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dalle_data.errors import OutputDirError

Where = Literal["dataset", "rejected"]
WHERES: tuple[Where, ...] = ("dataset", "rejected")

SPEC_FILE = "spec.yaml"
RUN_FILE = "run.json"
LABELS_FILE = "labels.json"
SUMMARY_FILE = "summary.json"
SUCCESS_FILE = "_SUCCESS"
RUNLOG_FILE = "runlog.jsonl"
MANIFEST_FILE = "manifest.jsonl"
LOCK_FILE = ".dalle-data.lock"
SHARDS_DIR = "shards"
METADATA_FILE = "metadata.jsonl"
CARD_FILE = "README.md"
REVIEW_DIR = "review"
DECISIONS_FILE = "decisions.jsonl"  # under REVIEW_DIR, as are the next four
ORIGINALS_FILE = "originals.jsonl"
APPLIED_FILE = "applied.jsonl"
JOURNAL_FILE = "apply-journal.json"
DEDUP_FILE = "dedup.json"
EMBEDDINGS_DIR = "embeddings"
REPORT_DIR = "report"
TEMP_PATTERN = ".tmp-*.part"

_SHARD = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_PART_PREFIX = re.compile(r"^p(\d{4,})of(\d{4,})-")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class Layout:
    """The paths of the run in ``out`` (``split``: the dataset split's name)."""

    out: Path
    split: str = "train"

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if not _ID.match(self.split):
            raise OutputDirError(f"split {self.split!r} is not a plain name (letters, digits, _ and -)")

    # --- run-level files ---------------------------------------------------------
    @property
    def spec(self) -> Path:
        return self.out / SPEC_FILE

    @property
    def run(self) -> Path:
        return self.out / RUN_FILE

    @property
    def labels(self) -> Path:
        return self.out / LABELS_FILE

    @property
    def summary(self) -> Path:
        return self.out / SUMMARY_FILE

    @property
    def success(self) -> Path:
        return self.out / SUCCESS_FILE

    @property
    def runlog(self) -> Path:
        return self.out / RUNLOG_FILE

    @property
    def manifest(self) -> Path:
        return self.out / MANIFEST_FILE

    @property
    def lock(self) -> Path:
        return self.out / LOCK_FILE

    # --- shards ------------------------------------------------------------------
    @property
    def shards(self) -> Path:
        return self.out / SHARDS_DIR

    def marker(self, shard: str) -> Path:
        return self.shards / f"{_checked(shard, _SHARD, 'shard')}.jsonl"

    def intent(self, shard: str) -> Path:
        return self.shards / f"{_checked(shard, _SHARD, 'shard')}.intent.json"

    # --- datasets ----------------------------------------------------------------
    def parquet_dir(self, where: Where = "dataset") -> Path:
        return self.out / "parquet" / self.split if where == "dataset" else self.out / "rejected" / "parquet"

    def parquet_part(self, shard: str, where: Where = "dataset") -> Path:
        return self.parquet_dir(where) / f"part-{_checked(shard, _SHARD, 'shard')}.parquet"

    @property
    def imagefolder(self) -> Path:
        return self.out / "imagefolder"

    def images_dir(self, where: Where = "dataset") -> Path:
        return self.imagefolder / self.split if where == "dataset" else self.out / "rejected" / "imagefolder"

    def png(self, folder: str, record_id: str, where: Where = "dataset") -> Path:
        if not folder or folder in (".", "..") or any(c in folder for c in "/\\\x00"):
            raise OutputDirError(f"class folder {folder!r} is not a plain folder name")
        return self.images_dir(where) / folder / f"{_checked(record_id, _ID, 'record id')}.png"

    def metadata(self, where: Where = "dataset") -> Path:
        return self.images_dir(where) / METADATA_FILE

    @property
    def card(self) -> Path:
        return self.imagefolder / CARD_FILE

    def embeddings(self, shard: str) -> Path:
        return self.out / EMBEDDINGS_DIR / f"{_checked(shard, _SHARD, 'shard')}.npz"

    @property
    def vocabulary(self) -> Path:
        return self.out / EMBEDDINGS_DIR / "text" / "vocabulary.npz"

    # --- report --------------------------------------------------------------------
    @property
    def dataset_card(self) -> Path:
        return self.out / CARD_FILE

    @property
    def report_dir(self) -> Path:
        return self.out / REPORT_DIR

    @property
    def report_html(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def report_json(self) -> Path:
        return self.report_dir / "report.json"

    @property
    def probe_json(self) -> Path:
        return self.report_dir / "probe.json"

    @property
    def probe_predictions(self) -> Path:
        """Each probe setting's predictions on the test images (``focus --from-probe`` reads them)."""
        return self.report_dir / "probe-predictions.jsonl"

    @property
    def focus(self) -> Path:
        """Where ``dalle-data focus OUT`` writes its focus (``generate --focus`` reads it)."""
        return self.out / "focus.yaml"

    # --- review ------------------------------------------------------------------
    @property
    def review(self) -> Path:
        return self.out / REVIEW_DIR

    @property
    def dedup(self) -> Path:
        return self.review / DEDUP_FILE

    @property
    def decisions(self) -> Path:
        return self.review / DECISIONS_FILE

    @property
    def originals(self) -> Path:
        """Each record's state before ``review --apply`` or ``dedup`` first changed it."""
        return self.review / ORIGINALS_FILE

    @property
    def applied(self) -> Path:
        return self.review / APPLIED_FILE

    @property
    def apply_journal(self) -> Path:
        return self.review / JOURNAL_FILE

    # --- ownership -----------------------------------------------------------------
    def run_files(self) -> list[Path]:
        """Files at fixed places that a run writes (``--overwrite`` removes them; not ``focus``: a user may
        have edited it, and it is not the run's own)."""
        return [self.spec, self.run, self.labels, self.summary, self.success, self.runlog, self.manifest,
                self.card, self.metadata("dataset"), self.metadata("rejected"), self.dataset_card,
                self.report_html, self.report_json, self.probe_json, self.probe_predictions, self.dedup,
                self.vocabulary]

    def run_dirs(self, folders: Iterable[str] = ()) -> list[Path]:
        """Folders a run creates, deepest first (removed by ``--overwrite`` when left empty)."""
        folders = list(folders)
        dirs = [self.images_dir(w) / f for w in WHERES for f in folders]
        dirs += [self.images_dir("dataset"), self.images_dir("rejected"), self.imagefolder,
                 self.parquet_dir("dataset"), self.parquet_dir("rejected"), self.out / "parquet",
                 self.out / "rejected", self.shards, self.vocabulary.parent, self.out / EMBEDDINGS_DIR,
                 self.report_dir]
        return dirs

    def contained(self, path: Path) -> Path:
        """``path`` if it lies inside OUT (links resolved), else a one-line error."""
        root = self.out.resolve()
        resolved = Path(path).resolve()
        if resolved != root and root not in resolved.parents:
            raise OutputDirError(f"{path} lies outside the run directory {self.out}; refusing to touch it")
        return Path(path)


def part_prefix(index: int, count: int) -> str:
    """The prefix of the shard names of part ``index`` of ``count`` (``--shard i/n``): ``p0003of0010-``."""
    return f"p{index:04d}of{count:04d}-"


def shard_part(shard: str) -> tuple[int, int] | None:
    """``(index, count)`` of the part whose shard this is (``p0003of0010-r001-s0000``), None for an unsharded one.

    Parsed, never sliced: the numbers are as wide as they need to be (``p0000of10000-``)."""
    match = _PART_PREFIX.match(shard)
    if match is None or part_prefix(int(match.group(1)), int(match.group(2))) != match.group(0):
        return None
    return int(match.group(1)), int(match.group(2))


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value) or value in (".", ".."):
        raise OutputDirError(f"{what} {value!r} is not a plain name")
    return value
