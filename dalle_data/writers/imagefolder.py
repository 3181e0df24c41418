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

Labels: ``label`` ids follow the run's one label map (``OUT/labels.json``),
whose ids are the sorted folder names, so every loader agrees:

- ``datasets.load_dataset("OUT/imagefolder")`` (recommended): reads README.md,
  whose YAML ``configs`` entry declares the split and the full features:
  ``image`` Image, ``label`` ClassLabel(names=the map's labels), ``label_name``
  and every other column typed as in Parquet. The config also carries a
  fingerprint of ``metadata.jsonl`` (its ``description``): the Hugging Face
  cache key is derived from it, so a second run in another folder, or the
  same folder after ``review --apply``, is never served from an older cache.
- ``torchvision.datasets.ImageFolder("OUT/imagefolder/<split>")``: classes are
  the folder names, sorted — the same order as the map; every class folder
  exists, even an empty one (torchvision then refuses the tree unless given
  ``allow_empty=True``, rather than silently renumbering the classes).
  ``ds.classes[i]`` is a folder name: ``labels.json`` maps it to the label.
- ``datasets.load_dataset("imagefolder", data_dir="OUT/imagefolder")``: with a
  metadata file, datasets 5.x takes the columns from ``metadata.jsonl``:
  ``label`` is the map's int id (not a ClassLabel), ``label_name`` the class.

Images are written per shard, each atomically; ``metadata.jsonl`` and the
card are rebuilt whole at ``close`` from every finished record, so a row never
points at a missing file and a resumed run never duplicates one. Images of
this run's records that no finished record accounts for (from a shard cut
off mid-write and redone) are removed at ``close``; files dalle-data did not
write are never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from dalle_data.records import Record
from dalle_data.rundir.layout import WHERES, Layout, Where
from dalle_data.writers.base import (
    Format,
    Good,
    ReadBack,
    WriterContext,
    atomic_write_bytes,
    dataset_columns,
    dataset_row,
    destination,
    ensure_dir,
    json_line,
    remove_file,
)
from dalle_data.rundir.shards import ShardStore

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


def metadata_fingerprint(data: bytes) -> str:
    """What the card carries so that the Hugging Face cache key changes whenever the files do."""
    return hashlib.sha256(data).hexdigest()[:16]


def dataset_card(ctx: WriterContext, fingerprint: str = "") -> str:
    """README.md for ``OUT/imagefolder``: YAML front matter (JSON is YAML) plus a short note."""
    config = {
        "config_name": "default",
        "data_files": [{"split": ctx.split, "path": f"{ctx.split}/**"}],
        "features": _yaml_features(ctx.class_names),
        # datasets derives its cache key from the card's configs: a fingerprint of
        # metadata.jsonl makes another run's (or an older state's) cache miss.
        "description": f"dalle-data images, metadata sha256 {fingerprint}",
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
        self.root = ctx.layout.imagefolder
        self.dirs = dirs(ctx.layout)
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
        """Rebuild both ``metadata.jsonl`` files and the card from every finished record."""
        owned = {r.id for r in records}
        owned.update(i for ids in ShardStore(self.ctx.layout).intents().values() for i in ids)
        write_indexes(self.ctx, records, owned)


def expected_indexes(ctx: WriterContext, records: Sequence[Record]) -> dict[Path, bytes | None]:
    """What the index files should hold for ``records``: path -> bytes (None: the file should not exist)."""
    rows: dict[str, list[dict[str, Any]]] = {"dataset": [], "rejected": []}
    for record in records:
        where = destination(record, ctx)
        if where is not None:
            file_name = f"{ctx.class_dir(record, need_image=False)}/{record.id}.png"
            rows[where].append({"file_name": file_name, **dataset_row(record)})
    layout = ctx.layout
    out: dict[Path, bytes | None] = {}
    for where in ("dataset", "rejected"):
        data = b"".join(json_line(row) for row in rows[where]) if rows[where] else None
        out[layout.metadata(where)] = data  # type: ignore[arg-type]
        if where == "dataset":
            card = dataset_card(ctx, metadata_fingerprint(data)).encode("utf-8") if data is not None else None
            out[layout.card] = card
    return out


def write_indexes(ctx: WriterContext, records: Sequence[Record], owned: Collection[str]) -> None:
    """``metadata.jsonl`` (dataset and rejected), every class folder, the card; strays of ``owned`` ids removed.

    Shared by ``close``, ``review --apply`` (which moves images, then rebuilds these) and ``verify --repair``.
    """
    layout = ctx.layout
    wanted: dict[str, set[str]] = {"dataset": set(), "rejected": set()}
    for record in records:
        where = destination(record, ctx)
        if where is not None:
            wanted[where].add(f"{ctx.class_dir(record, need_image=False)}/{record.id}.png")
    for where in ("dataset", "rejected"):
        _remove_strays(layout.images_dir(where), wanted[where], owned)  # type: ignore[arg-type]
    if wanted["dataset"]:
        for folder in ctx.class_dirs:  # torchvision numbers the folders it finds: all of them, always
            ensure_dir(layout.images_dir() / folder)
    for path, data in expected_indexes(ctx, records).items():
        if data is None:
            remove_file(path)
        else:
            ensure_dir(path.parent)
            atomic_write_bytes(path, data)


def _remove_strays(directory: Path, wanted: set[str], owned: Collection[str]) -> None:
    """Remove images of this run's records that are not where they belong (never anyone else's files)."""
    if not directory.is_dir():
        return
    for path in directory.glob("*/*.png"):
        if path.stem in owned and f"{path.parent.name}/{path.name}" not in wanted:
            logger.info("removing stray image %s", path)
            remove_file(path)


# --- the format record: folders, verify, reading back ---------------------------------------


def dirs(layout: Layout) -> dict[Where, Path]:
    return {where: layout.images_dir(where) for where in WHERES}


def exists(layout: Layout) -> bool:
    return layout.metadata().is_file()


def loader(out: str, folder: str) -> str:
    return f"datasets.load_dataset('{out}/imagefolder') or torchvision.datasets.ImageFolder('{folder}')"


def quick_check(ctx: WriterContext, where: Where, ids: set[str], problems: list[str]) -> None:
    """Counts and sizes: as many complete PNGs of this run as records placed here, and their metadata file."""
    layout, n = ctx.layout, len(ids)
    pngs = [p for p in layout.images_dir(where).glob("*/*.png") if p.is_file()]
    ours = sum(p.stem in ids for p in pngs)
    if ours != n:
        problems.append(f"{layout.images_dir(where)} holds {ours} image(s), the records say {n}")
    if any(not _png_complete(p) for p in pngs if p.stem in ids):
        problems.append(f"{layout.images_dir(where)} holds empty or truncated image files")
    if n and not layout.metadata(where).is_file():
        problems.append(f"{layout.metadata(where)} is missing")


def _png_complete(path: Path) -> bool:
    """A PNG ends with its IEND chunk: a cheap test for a truncated file (12 bytes read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(-12, 2)
            return handle.read(12) == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    except OSError:
        return False


def check(ctx: WriterContext, records: Sequence[Record], shards: set[str], good: Good) -> ReadBack:
    """Every image where its record's state puts it, with its bytes; strays; the indexes and class folders."""
    layout, found = ctx.layout, ReadBack()
    ids = {r.id for r in records}
    placed = {}
    for record in records:
        where = destination(record, ctx)
        if where is not None:
            placed[record.id] = layout.png(record.class_dir, record.id, where)
    for record in records:
        path = placed.get(record.id)
        if path is None:
            continue
        data = path.read_bytes() if path.is_file() else None
        if good(record, data):
            found.images[record.id] = data  # type: ignore[assignment]
        else:
            found.bad.add(record.id)
            found.problems.append((f"{path} is {'missing' if data is None else 'damaged'}", "rewrite"))
    for where in WHERES:
        for png in layout.images_dir(where).glob("*/*.png"):
            if png.stem in ids and placed.get(png.stem) != png:
                found.strays.append(png)
                found.problems.append((f"{png} is an image of this run in the wrong place", "remove"))
    for path, data in expected_indexes(ctx, records).items():
        current = path.read_bytes() if path.is_file() else None
        if current != data:
            found.problems.append((f"{path} does not match the records", "index"))
    for folder in ctx.class_dirs:
        if layout.metadata().is_file() and not (layout.images_dir() / folder).is_dir():
            found.problems.append((f"class folder {layout.images_dir() / folder} is missing", "index"))
    return found


def repair(ctx: WriterContext, records: Sequence[Record], found: ReadBack, relabel: bool) -> dict[str, int]:
    """Images found bad or missing written again, strays removed, the indexes rebuilt."""
    counts: dict[str, int] = {}
    for record in records:
        where = destination(record, ctx)
        if where is None or record.image is None:
            continue
        path = ctx.layout.png(record.class_dir, record.id, where)  # type: ignore[arg-type]
        if record.id in found.bad or not path.is_file():
            ensure_dir(path.parent)
            atomic_write_bytes(path, record.image)
            counts["images rewritten"] = counts.get("images rewritten", 0) + 1
    for stray in found.strays:
        remove_file(stray)
        counts["stray images removed"] = counts.get("stray images removed", 0) + 1
    write_indexes(ctx, records, owned={r.id for r in records})
    return counts


def read_images(layout: Layout, records: Sequence[Record], where: Where) -> list[tuple[str, bytes | None]] | None:
    """Each record's PNG path (read when used), or None when the tree holds nothing there (the dataset's tree
    counts once its metadata.jsonl is written: before, its PNGs are a run's leftovers, and ``--from`` paths
    enter the spec hash)."""
    if not layout.images_dir(where).is_dir() or (where == "dataset" and not exists(layout)):
        return None
    return [(str(layout.png(r.class_dir, r.id, where)), None) for r in records]


IMAGEFOLDER = Format(
    name="imagefolder", title="ImageFolder", writer=ImageFolderWriter, dirs=dirs, exists=exists, loader=loader,
    quick_check=quick_check, check=check, repair=repair, read_images=read_images, checked_as="images",
    read_rank=10, card_files=lambda split: f"imagefolder/{split}/**", card_rank=20,
)
