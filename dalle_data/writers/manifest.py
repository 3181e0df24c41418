"""The run manifest: one JSON line per record, whatever became of it.

Layout::

    OUT/manifest.jsonl

Every record the runner hands over (kept, rejected, failed, refused) gets one
line with ``record.metadata()``: all ``Record`` fields but the image bytes,
under their record names (``label`` is the class name, ``label_id`` its
index). NaN and infinite scores are written as ``null``. Lines are appended
and flushed one by one (the file is fsynced at close), so the manifest is a
log of the run so far; a torn last line from a crash is dropped on reopen.
It is a log, not a set: a record handed over twice appears twice.
"""

from __future__ import annotations

import logging

from dalle_data.records import Record
from dalle_data.writers.base import JsonlAppender, WriterContext

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"


class ManifestWriter:
    """Appends every record's metadata to ``OUT/manifest.jsonl``."""

    def __init__(self, ctx: WriterContext) -> None:
        self.path = ctx.out_dir / MANIFEST_NAME
        self._log: JsonlAppender | None = None
        self._closed = False

    def write(self, record: Record) -> None:
        if self._closed:
            raise RuntimeError("ManifestWriter.write called after close")
        if self._log is None:
            self._log = JsonlAppender(self.path)
        self._log.append(record.metadata())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._log is not None:
            self._log.close()
