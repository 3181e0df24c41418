"""The run manifest: one JSON line per record, whatever became of it.

Layout::

    OUT/manifest.jsonl

Every record of every finished shard (kept, rejected, failed, refused) gets
one line with ``record.metadata()``: all ``Record`` fields but the image bytes,
under their record names (``label`` is the class name, ``label_id`` its
index). NaN and infinite scores are written as ``null``. The file is written
whole, atomically, at ``close``; while a run is going, the per-shard records
in ``OUT/shards/`` are the log.
"""

from __future__ import annotations

from collections.abc import Sequence

from dalle_data.records import Record
from dalle_data.writers.base import WriterContext, write_jsonl

MANIFEST_NAME = "manifest.jsonl"


class ManifestWriter:
    """Writes every record's metadata to ``OUT/manifest.jsonl`` at close."""

    def __init__(self, ctx: WriterContext) -> None:
        self.path = ctx.out_dir / MANIFEST_NAME

    def write(self, shard: str, records: Sequence[Record]) -> None:
        pass  # the runner's shard records are the running log

    def close(self, records: Sequence[Record]) -> None:
        write_jsonl(self.path, [r.metadata() for r in records])
