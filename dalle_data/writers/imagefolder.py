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

Images are written per shard, each atomically; ``metadata.jsonl`` and the
card are rebuilt whole at ``close`` from every finished record, so a row never
points at a missing file and a resumed run never duplicates one. Images that
no finished record accounts for (from a shard cut off mid-write and redone)
are removed at ``close``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dalle_data.records import Record
from dalle_data.writers.base import (
    WriterContext,
    atomic_write_bytes,
    dataset_columns,
    dataset_row,
    destination,
    ensure_dir,
    remove_file,
    write_jsonl,
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


class ImageFolderWriter:
    """Writes kept records (and, with keep_rejected, rejected ones) as PNG files."""

    def __init__(self, ctx: WriterContext) -> None:
        self.ctx = ctx
        self.root = ctx.out_dir / "imagefolder"
        self.dirs = {"dataset": self.root / ctx.split, "rejected": ctx.out_dir / "rejected" / "imagefolder"}
        self._made: set[Path] = set()

    def write(self, shard: str, records: Sequence[Record]) -> None:
        for record in records:
            where = destination(record, self.ctx)
            if where is None:
                continue
            folder = self.dirs[where] / self.ctx.class_dir(record)  # checks label, label_id and image
            if folder not in self._made:
                ensure_dir(folder)
                self._made.add(folder)
            assert record.image is not None
            atomic_write_bytes(folder / f"{record.id}.png", record.image)

    def close(self, records: Sequence[Record]) -> None:
        rows: dict[str, list[dict[str, Any]]] = {"dataset": [], "rejected": []}
        for record in records:
            where = destination(record, self.ctx)
            if where is not None:
                file_name = f"{self.ctx.class_dir(record, need_image=False)}/{record.id}.png"
                rows[where].append({"file_name": file_name, **dataset_row(record)})
        for where, directory in self.dirs.items():
            if rows[where]:
                write_jsonl(directory / METADATA_NAME, rows[where])
            else:
                remove_file(directory / METADATA_NAME)
            _remove_strays(directory, {r["file_name"] for r in rows[where]})
        if rows["dataset"]:
            atomic_write_bytes(self.root / "README.md", dataset_card(self.ctx).encode("utf-8"))
        else:
            remove_file(self.root / "README.md")


def _remove_strays(directory: Path, wanted: set[str]) -> None:
    if not directory.is_dir():
        return
    for path in directory.glob("*/*.png"):
        if f"{path.parent.name}/{path.name}" not in wanted:
            logger.info("removing stray image %s", path)
            remove_file(path)
