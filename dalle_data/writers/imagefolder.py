"""An ImageFolder tree that torchvision and Hugging Face ``imagefolder`` read.

Layout (``OUT`` is the run's output directory)::

    OUT/imagefolder/README.md                       dataset card: HF features (see below)
    OUT/imagefolder/<split>/<class_dir>/<id>.png    kept images, the record's exact PNG bytes
    OUT/imagefolder/<split>/metadata.jsonl          one row per kept image
    OUT/rejected/imagefolder/<class_dir>/<id>.png   rejected images (only with keep_rejected)
    OUT/rejected/imagefolder/metadata.jsonl

Rejected data lives outside ``OUT/imagefolder`` so that no loader mistakes it
for a split. Folders are ``class_dirs`` (safe names from the caller); labels
stay the class names (class "a/b" lives in folder "a_b", label_name "a/b").

``metadata.jsonl`` rows: ``file_name`` (relative to the metadata file, e.g.
``dalmatian/ab12.png``), ``label`` (int, the label id = index into
class_names), ``label_name`` (the class name) and every other ``Record`` field
but ``label_id``. The record's string ``label`` is stored as ``label_name``
because ``label`` is the integer class index, as in the Parquet shards.

What each loader gives:

- ``torchvision.datasets.ImageFolder("OUT/imagefolder/<split>")``: classes are
  the folder names, sorted; its class indices follow that sort, not
  label_id (map through ``metadata.jsonl`` if the run's ids are needed).
- ``datasets.load_dataset("imagefolder", data_dir="OUT/imagefolder")``: when a
  metadata file exists, datasets 5.x does NOT add labels from folder names;
  the features come from ``metadata.jsonl``: ``image`` (Image), ``label``
  (int64, not a ClassLabel), ``label_name`` and the other columns, with types
  inferred by pyarrow from the first 10 MB of the file (all-null columns
  become ``null``, and loading fails if such a column has a value further
  down; ISO timestamps without fractional seconds become timestamps). For a
  ClassLabel use ``ds.cast_column("label", ClassLabel(names=...))``, or
  better the next form.
- ``datasets.load_dataset("OUT/imagefolder")``: reads README.md, whose YAML
  ``configs`` entry declares the split and the full features: ``image`` Image,
  ``label`` ClassLabel(names=class_names), ``label_name`` and every other
  column typed as in Parquet (strings stay strings). This is the recommended
  way.

Each image is written atomically before its metadata row is appended, so a
crash never leaves a row pointing at a missing file. Rows whose ``file_name``
is already in ``metadata.jsonl`` are skipped, so a resumed run does not
duplicate them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dalle_data.records import Record
from dalle_data.writers.base import (
    JsonlAppender,
    WriterContext,
    atomic_write_bytes,
    dataset_columns,
    dataset_row,
    destination,
    ensure_dir,
    read_jsonl_values,
)

logger = logging.getLogger(__name__)

METADATA_NAME = "metadata.jsonl"


def _yaml_features(class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Features in the README ``features`` list form that datasets parses."""
    names = {str(i): name for i, name in enumerate(class_names)}
    features: list[dict[str, Any]] = [
        {"name": "image", "dtype": "image"},
        {"name": "label", "dtype": {"class_label": {"names": names}}},
    ]
    features += [{"name": name, "dtype": dtype} for name, dtype in dataset_columns()[1:]]
    return features


def dataset_card(ctx: WriterContext) -> str:
    """README.md for ``OUT/imagefolder``: YAML front matter (JSON is YAML) plus a short note."""
    config = {
        "config_name": "default",
        "data_files": [{"split": ctx.split, "path": f"{ctx.split}/**"}],
        "features": _yaml_features(ctx.class_names),
    }
    front = json.dumps({"configs": [config]}, indent=2)
    return (
        f"---\n{front}\n---\n\n"
        "# Synthetic images made by dalle-data\n\n"
        f"`{ctx.split}/<class folder>/<id>.png` with `{ctx.split}/metadata.jsonl`.\n\n"
        "```python\n"
        "import datasets\n"
        'ds = datasets.load_dataset("path/to/imagefolder")  # label is a ClassLabel\n'
        "```\n"
    )


class _FolderSink:
    """One ImageFolder root: class folders of PNGs plus ``metadata.jsonl``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        self._metadata: JsonlAppender | None = None
        self._seen: set[str] = set()
        self._dirs: set[str] = set()

    def add(self, record: Record, class_dir: str) -> None:
        if self._metadata is None:
            self._metadata = JsonlAppender(self.root / METADATA_NAME)  # cuts a torn last line
            self._seen = read_jsonl_values(self.root / METADATA_NAME, "file_name")
        file_name = f"{class_dir}/{record.id}.png"
        if file_name in self._seen:
            logger.debug("%s: %s is already written, skipping", self.root, file_name)
            return
        if class_dir not in self._dirs:
            ensure_dir(self.root / class_dir)
            self._dirs.add(class_dir)
        assert record.image is not None
        atomic_write_bytes(self.root / file_name, record.image)
        self._metadata.append({"file_name": file_name, **dataset_row(record)})
        self._seen.add(file_name)
        self.count += 1

    @property
    def opened(self) -> bool:
        return self._metadata is not None

    def close(self) -> None:
        if self._metadata is not None:
            self._metadata.close()


class ImageFolderWriter:
    """Writes kept records (and, with keep_rejected, rejected ones) as PNG files."""

    def __init__(self, ctx: WriterContext) -> None:
        self.ctx = ctx
        self.root = ctx.out_dir / "imagefolder"
        self._sinks = {
            "dataset": _FolderSink(self.root / ctx.split),
            "rejected": _FolderSink(ctx.out_dir / "rejected" / "imagefolder"),
        }
        self._closed = False

    def write(self, record: Record) -> None:
        if self._closed:
            raise RuntimeError("ImageFolderWriter.write called after close")
        where = destination(record, self.ctx)
        if where is None:
            return
        class_dir = self.ctx.class_dir(record)  # checks label, label_id and image
        sink = self._sinks[where]
        if where == "dataset" and not sink.opened:
            ensure_dir(self.root)
            atomic_write_bytes(self.root / "README.md", dataset_card(self.ctx).encode("utf-8"))
        sink.add(record, class_dir)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sinks["dataset"].close()
        finally:
            self._sinks["rejected"].close()
