"""What every writer shares: the ``Writer`` protocol, its context, safe file I/O.

A writer lays records out on disk; it never changes them. All writers share
one tiny interface so that the runner can hold a list of them and a benchmark
can swap in ``NoopWriter``:

* ``write(shard, records)`` lays out one finished shard of work. It is
  idempotent: writing the same shard again (a resumed run redoing a shard that
  was cut off) produces the same files under the same names.
* ``close(records)`` finishes the dataset from every record of every finished
  shard (metadata only; images may be absent): indexes such as
  ``metadata.jsonl``, the manifest and dataset cards are rebuilt whole, so they
  are right however many times the run was interrupted.

Files are written through ``dalle_data.files`` (re-exported here), so that
nothing is ever half-written under its final name.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dalle_data.files import (  # noqa: F401 - the safe file I/O every writer uses, re-exported
    append_jsonl, atomic_open, atomic_write_bytes, disk_error, ensure_dir, json_line, remove_file, remove_temporaries,
    temp_path, write_jsonl,
)
from dalle_data.records import NON_METADATA, Record
from dalle_data.rundir.layout import Layout, Where

logger = logging.getLogger(__name__)

_SPLIT_NAME = re.compile(r"^\w+(\.\w+)*$")  # what datasets accepts as a split name


@runtime_checkable
class Writer(Protocol):
    """Lays records out on disk, one shard at a time; ``close`` builds the indexes."""

    def write(self, shard: str, records: Sequence[Record]) -> None: ...

    def close(self, records: Sequence[Record]) -> None: ...


@dataclass(frozen=True)
class WriterContext:
    """Everything a writer needs to know about the run, besides the records.

    ``record.label_id`` indexes ``class_names`` (the ClassLabel names) and
    ``class_dirs`` (their safe folder names, computed by the caller).
    """

    out_dir: Path
    class_names: tuple[str, ...]
    class_dirs: tuple[str, ...]
    split: str = "train"
    keep_rejected: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "class_dirs", tuple(self.class_dirs))
        if len(self.class_names) != len(self.class_dirs):
            raise ValueError("class_names and class_dirs must have the same length")
        if not _SPLIT_NAME.match(self.split):
            raise ValueError(f"split {self.split!r} is not a valid datasets split name (letters, digits, _)")

    @property
    def layout(self) -> Layout:
        return Layout(self.out_dir, self.split)

    def class_dir(self, record: Record, *, need_image: bool = True) -> str:
        """The folder for a record that goes into a dataset, after checking its label."""
        lid = record.label_id
        if not 0 <= lid < len(self.class_names):
            raise ValueError(f"record {record.id}: label_id {lid} is not an index into class_names")
        if record.label != self.class_names[lid]:
            raise ValueError(
                f"record {record.id}: label {record.label!r} != class_names[{lid}] {self.class_names[lid]!r}"
            )
        if record.class_dir != self.class_dirs[lid]:
            raise ValueError(
                f"record {record.id}: class_dir {record.class_dir!r} != class_dirs[{lid}] {self.class_dirs[lid]!r}"
            )
        if need_image and record.image is None:
            raise ValueError(f"record {record.id} has status {record.status!r} but no image bytes")
        return self.class_dirs[lid]


# --- formats ---------------------------------------------------------------


@dataclass
class ReadBack:
    """What ``verify`` found in one format: the good image bytes by id, the problems in words (with their repair:
    ``"rewrite"``, ``"remove"``, ``"index"``), and what ``--repair`` must redo there (``bad``: the format's own
    keys, files or ids; ``strays``: images of this run in the wrong place, whose bytes repair may still use)."""

    images: dict[str, bytes] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)
    bad: set[Any] = field(default_factory=set)
    strays: list[Path] = field(default_factory=list)


Good = Callable[[Record, "bytes | None"], bool]  # verify's test: these bytes are this record's image


@dataclass(frozen=True)
class Format:
    """One output format, all that the rest of dalle-data asks of it (``dalle_data.writers.formats.FORMATS``).

    * ``writer``: builds its ``Writer`` for a run; ``dirs``: where its files lie (from the ``Layout``), dataset
      and rejected; ``exists``: a dataset was written (the summary's ``outputs``);
    * ``loader``: the line the summary prints after the folder (``out``: the run directory, ``folder``: the
      dataset folder), how to load it; ``card_files``: the Hub card's ``data_files`` glob for a split (None: the
      card does not point at it) and ``card_rank`` (lower wins when a run has several);
    * ``quick_check`` (counts and footers, ``generate``'s check of a finished run), ``check`` (every byte,
      ``verify``), ``repair`` (rewrite from the records and good bytes, ``verify --repair``; returns counts),
      ``checked_as``: the name of its count in verify's report;
    * ``read_images``: a run's images of ``records`` in ``where``, as (path, bytes or None) pairs (``--from``,
      ``probe``), None when it holds none there; ``read_rank``: lower is read first.
    """

    name: str
    title: str
    writer: Callable[[WriterContext], Writer]
    dirs: Callable[[Layout], dict[Where, Path]]
    exists: Callable[[Layout], bool]
    loader: Callable[[str, str], str]
    quick_check: Callable[[WriterContext, Where, set[str], list[str]], None]
    check: Callable[[WriterContext, Sequence[Record], set[str], Good], ReadBack]
    repair: Callable[[WriterContext, Sequence[Record], ReadBack, bool], dict[str, int]]
    read_images: Callable[[Layout, Sequence[Record], Where], "list[tuple[str, bytes | None]] | None"]
    checked_as: str
    read_rank: int = 50
    card_files: Callable[[str], str] | None = None
    card_rank: int = 50
    inline: bool = False  # read_images carries the bytes (a path then names a row inside a file)


def destination(record: Record, ctx: WriterContext) -> str | None:
    """Where a record goes in a dataset writer: ``"dataset"``, ``"rejected"`` or nowhere.

    Rejected images are kept apart with ``keep_rejected``; those a person
    rejected in review, or ``dedup`` set aside, always are (neither deletes an image).
    """
    if record.status == "kept":
        return "dataset"
    if record.status == "rejected" and (ctx.keep_rejected or record.reject_reason in ("review", "duplicate")):
        return "rejected"
    return None


# --- columns ---------------------------------------------------------------

_TYPE_NAMES = {"str": "string", "int": "int64", "float": "float64", "bool": "bool"}


def _type_name(annotation: object) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    base = text.replace(" ", "").replace("|None", "").replace("None|", "")
    if base not in _TYPE_NAMES:
        raise TypeError(f"no column type for Record annotation {text!r}; teach dalle_data.writers.base")
    return _TYPE_NAMES[base]


@cache
def dataset_columns() -> tuple[tuple[str, str], ...]:
    """Metadata columns of a dataset row with their type names, in on-disk order.

    ``label`` holds the label id (a ClassLabel index) and ``label_name`` the
    class name; every other ``Record`` field but ``label_id`` and the image
    follows in declaration order. Type names are Hugging Face ``Value`` dtypes.
    """
    columns: list[tuple[str, str]] = [("label", "int64"), ("label_name", "string")]
    for field in dataclasses.fields(Record):
        if field.name not in ("label", "label_id") + NON_METADATA:
            columns.append((field.name, _type_name(field.type)))
    return tuple(columns)


def dataset_row(record: Record) -> dict[str, Any]:
    """A record's metadata under the dataset column names (see ``dataset_columns``)."""
    meta = record.metadata()
    row: dict[str, Any] = {"label": meta.pop("label_id"), "label_name": meta.pop("label")}
    row.update(meta)
    return row


def hf_features(class_names: tuple[str, ...]) -> dict[str, Any]:
    """Hugging Face ``Features.to_dict()`` form of a dataset row with its image."""
    features: dict[str, Any] = {
        "image": {"_type": "Image"},
        "label": {"names": list(class_names), "_type": "ClassLabel"},
    }
    for name, dtype in dataset_columns()[1:]:
        features[name] = {"dtype": dtype, "_type": "Value"}
    return features
