"""Image bytes for review: a record's PNG wherever it lies, and source thumbnails.

Paths are built only from a record's validated fields (its id, the run's
folder names, its shard), never from anything a browser sends, so nothing
outside the dataset can be reached through them. A record's PNG is looked up
in every place ``generate`` or ``--apply`` may have put it (the ImageFolder
tree or its rejected twin, the Parquet shard or its rejected twin), so images
still show while another process applies decisions.

Source thumbnails (the lineage of variation, fuse and inpaint images) come
from the ``source_path`` the record itself names: a file, or
``<file.parquet>#<row id>`` for a dalle-data output used as a source.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path

from dalle_data.records import Record
from dalle_data.review.run import ReviewRun
from dalle_data.rundir.layout import WHERES
from dalle_data.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 256


def png_candidates(run: ReviewRun, record_id: str) -> list[Path]:
    """Every ImageFolder path where the PNG of ``record_id`` may lie."""
    dirs = list(dict.fromkeys(run.class_dirs.values()))
    return [run.layout.png(d, record_id, where) for where in WHERES for d in dirs]


def parquet_candidates(run: ReviewRun, shard: str) -> list[Path]:
    return [run.layout.parquet_part(shard, where) for where in WHERES]


def read_parquet_images(path: Path, ids: Collection[str]) -> dict[str, bytes]:
    """The image bytes of the rows of ``ids`` in a dalle-data Parquet file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["id", "image"])
    except (OSError, ValueError) as err:
        log.warning("cannot read %s: %s", path, err)
        return {}
    rows = table.filter(pc.is_in(table["id"], value_set=pa.array(list(ids), pa.string()))).to_pylist()
    return {row["id"]: row["image"]["bytes"] for row in rows if row["image"] and row["image"]["bytes"]}


def read_parquet_image(path: Path, record_id: str) -> bytes | None:
    return read_parquet_images(path, [record_id]).get(record_id)


def locate(run: ReviewRun, record: Record) -> str | None:
    """Where the record's image lies now, relative to OUT (``<file>.parquet#<id>`` in Parquet)."""
    for path in png_candidates(run, record.id):
        if path.is_file():
            return path.relative_to(run.out).as_posix()
    current = run.current(record.id) or record
    dataset, rejected = parquet_candidates(run, record.shard)
    path = dataset if current.status == "kept" else rejected
    return f"{path.relative_to(run.out).as_posix()}#{record.id}" if path.is_file() else None


class ImageStore:
    """PNG bytes of the run's records and thumbnails of their sources.

    ImageFolder files are read at each request. Images inside Parquet shards
    are read a shard at a time: the rows of ``wanted`` (the selection) in a
    shard are kept in a cache bounded by ``cache_bytes``, least recently used
    out first, so a page of images costs one read per shard.
    """

    def __init__(self, run: ReviewRun, wanted: Collection[str] = (), cache_bytes: int = 256 << 20) -> None:
        self.run = run
        self.wanted = frozenset(wanted)
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def png(self, record: Record) -> bytes | None:
        for path in png_candidates(self.run, record.id):
            if path.is_file():
                return path.read_bytes()
        cached = self._get(("png", record.id))
        if cached is not None:
            return cached
        for path in parquet_candidates(self.run, record.shard):
            if path.is_file():
                found = read_parquet_images(path, self.wanted | {record.id})
                for rid, data in found.items():
                    self._put(("png", rid), data)
                if record.id in found:
                    return found[record.id]
        log.warning("no image found for record %s", record.id)
        return None

    def thumbnail(self, record: Record, which: int = 1) -> bytes | None:
        path = record.source_path if which == 1 else record.source2_path
        if not path:
            return None
        key = (f"src{which}", record.id)
        data = self._get(key)
        if data is None:
            data = _thumbnail(path, self.run.out)
            if data is not None:
                self._put(key, data)
        return data

    def _get(self, key: tuple[str, str]) -> bytes | None:
        with self._lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
            return data

    def _put(self, key: tuple[str, str], data: bytes) -> None:
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = data
            self._size += len(data)
            while self._size > self.cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._size -= len(old)


def _thumbnail(source_path: str, out: Path) -> bytes | None:
    """A PNG thumbnail (at most 256 px a side) of a source image, or None."""
    file_part, _, row_id = source_path.partition("#")
    path = Path(file_part).expanduser()
    if not path.is_absolute() and not path.is_file():
        path = out.parent / path  # relative to where the run was started, best guess: beside OUT
    try:
        if row_id and path.suffix == ".parquet":
            data = read_parquet_image(path, row_id)
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            data = path.read_bytes()
        else:
            data = None
    except OSError as err:
        log.info("source %s cannot be read: %s", source_path, err)
        return None
    return _shrink(data) if data else None


def _shrink(data: bytes) -> bytes | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        log.info("source image cannot be decoded: %s", err)
        return None
