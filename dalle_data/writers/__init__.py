"""Writers lay records out as datasets: Parquet shards, an ImageFolder tree, a manifest.

``make_writers(["parquet", "imagefolder"], ctx)`` returns the writers for a
run, always ending with the ``ManifestWriter``; ``FORMATS`` (``formats``) holds one
record per format, and adding a format is one module and one ``register``. Which records go where:

- ``status == "kept"``: into the dataset (each requested format);
- ``status == "rejected"``: into ``OUT/rejected/<format>/`` only when
  ``ctx.keep_rejected``, with all their scores;
- ``failed`` / ``refused`` (no image): only into the manifest.

Every record goes into ``OUT/manifest.jsonl``. The layouts are described in
``parquet``, ``imagefolder`` and ``manifest``. Importing this package imports
neither pyarrow, datasets, pandas nor torch; pyarrow loads when the first
Parquet shard is written.
"""

from __future__ import annotations

from collections.abc import Sequence

from dalle_data.embeddings import EmbeddingWriter
from dalle_data.errors import SpecError
from dalle_data.writers.base import Format, Writer, WriterContext, atomic_write_bytes
from dalle_data.writers.formats import FORMATS, outputs_of, register
from dalle_data.writers.imagefolder import ImageFolderWriter
from dalle_data.writers.manifest import ManifestWriter
from dalle_data.writers.noop import NoopWriter
from dalle_data.writers.parquet import ParquetWriter

__all__ = [
    "FORMATS",
    "Format",
    "ImageFolderWriter",
    "ManifestWriter",
    "NoopWriter",
    "ParquetWriter",
    "Writer",
    "WriterContext",
    "atomic_write_bytes",
    "make_writers",
    "outputs_of",
    "register",
]


def make_writers(formats: Sequence[str], ctx: WriterContext) -> list[Writer]:
    """One writer per requested format (duplicates ignored), then the embeddings and manifest writers."""
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        choices = ", ".join(sorted(FORMATS))
        raise SpecError(f"unknown output format {unknown[0]!r}; choose from {choices}")
    writers: list[Writer] = [FORMATS[name].writer(ctx) for name in dict.fromkeys(formats)]
    writers += [EmbeddingWriter(ctx), ManifestWriter(ctx)]
    return writers
