"""The scorer's view of every image, kept once: ``OUT/embeddings/<shard>.npz``.

When ``generate`` scores a batch it has, for every image, the scorer's
L2-normalised image embedding and the zero-shot class probabilities over the
scorer's label set. Both are kept, per shard, written with the shard's other
files and before its completion marker (so a shard with a marker has them),
and read back by ``report``, ``dedup`` and ``review`` (near-duplicates,
diversity, class probabilities and margins) without loading a model.

One file per shard, a NumPy ``.npz`` archive written byte-for-byte the same
for the same shard (fixed zip timestamps), holding:

* ``ids``        (n,)    record ids, in the shard's record order;
* ``embeddings`` (n, D)  float16, L2-normalised image embeddings;
* ``probs``      (n, L)  float16, zero-shot probabilities over ``labels``;
* ``labels``     (L,)    the scorer's label set (the run's classes, then any
  negative vocabulary);
* ``scorer``     ()      the scorer's name.

Every scored image is kept (kept and rejected); failed and refused records have
no image and no row. A run made before embeddings were kept gets them from
``report`` once (``compute_missing``), through the same writer.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dalle_data.records import Record
from dalle_data.files import atomic_write_bytes, ensure_dir

if TYPE_CHECKING:
    from dalle_data.rundir.layout import Layout
    from dalle_data.writers.base import WriterContext

log = logging.getLogger(__name__)

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, eq=False)
class Vectors:
    """What the scorer saw in one image: its embedding and its class probabilities over ``labels``."""

    embedding: np.ndarray  # (D,) float32, L2-normalised
    probs: np.ndarray  # (L,) float32
    labels: tuple[str, ...]
    scorer: str = ""


def path_of(layout: Layout, shard: str) -> Path:
    return layout.embeddings(shard)


def to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive with fixed timestamps: the same arrays give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            array = np.asarray(array)  # (np.ascontiguousarray would make a 0-d array 1-d)
            np.lib.format.write_array(member, array if array.flags.c_contiguous else array.copy(order="C"),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buf.getvalue()


def shard_arrays(records: Sequence[Record]) -> dict[str, np.ndarray] | None:
    """The arrays of a shard's file, from the records that carry ``vectors``; None when none do."""
    rows = [r for r in records if r.vectors is not None]
    if not rows:
        return None
    first: Vectors = rows[0].vectors  # type: ignore[assignment]
    rows = [r for r in rows if r.vectors.labels == first.labels]  # type: ignore[union-attr]
    return {
        "ids": np.array([r.id for r in rows], dtype=str),
        "embeddings": np.stack([r.vectors.embedding for r in rows]).astype(np.float16),  # type: ignore[union-attr]
        "probs": np.stack([r.vectors.probs for r in rows]).astype(np.float16),  # type: ignore[union-attr]
        "labels": np.array(first.labels, dtype=str),
        "scorer": np.array(first.scorer, dtype=str),
    }


class EmbeddingWriter:
    """The writer of ``OUT/embeddings/<shard>.npz`` (a ``Writer``: idempotent per shard, nothing to close)."""

    def __init__(self, ctx: WriterContext) -> None:
        self.layout = ctx.layout

    def write(self, shard: str, records: Sequence[Record]) -> None:
        arrays = shard_arrays(records)
        if arrays is None:  # records replayed from a marker, or a scorer without embeddings: leave any file be
            return
        write_shard(self.layout, shard, arrays)

    def close(self, records: Sequence[Record]) -> None:
        pass


def write_shard(layout: Layout, shard: str, arrays: dict[str, np.ndarray]) -> None:
    path = path_of(layout, shard)
    ensure_dir(path.parent)
    atomic_write_bytes(path, to_bytes(arrays))


def read_shard(path: Path) -> dict[str, np.ndarray] | None:
    """A shard's arrays, or None when the file is missing or does not hold up (it is then recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("ids", "embeddings", "probs", "labels", "scorer")}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        log.warning("embeddings file %s does not hold up (%s); it will be recomputed", path, err)
        return None
    n = len(arrays["ids"])
    emb, probs = arrays["embeddings"], arrays["probs"]
    if emb.ndim != 2 or emb.shape[0] != n or probs.ndim != 2 or probs.shape != (n, len(arrays["labels"])):
        log.warning("embeddings file %s has inconsistent shapes; it will be recomputed", path)
        return None
    return arrays


@dataclass
class EmbeddingSet:
    """The embeddings of a set of records, row ``i`` for ``ids[i]`` (float32, renormalised)."""

    ids: list[str]
    x: np.ndarray  # (n, D) float32
    probs: np.ndarray  # (n, L) float32
    labels: tuple[str, ...]
    scorer: str
    row: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.row = {i: k for k, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, ids: Iterable[str]) -> np.ndarray:
        """Rows of ``x`` for ``ids`` (each must be present)."""
        return self.x[[self.row[i] for i in ids]]


def load(layout: Layout, shards: Iterable[str], wanted: set[str] | None = None) -> tuple[EmbeddingSet | None, set[str]]:
    """The embeddings of ``shards`` (only ``wanted`` ids when given) and the shards whose file is missing."""
    ids: list[str] = []
    xs: list[np.ndarray] = []
    ps: list[np.ndarray] = []
    labels: tuple[str, ...] | None = None
    scorer = ""
    missing: set[str] = set()
    for shard in shards:
        arrays = read_shard(path_of(layout, shard))
        if arrays is None:
            missing.add(shard)
            continue
        these = tuple(str(s) for s in arrays["labels"])
        if labels is None:
            labels, scorer = these, " ".join(str(x) for x in np.atleast_1d(arrays["scorer"]))
        elif these != labels:
            log.warning("embeddings of shard %s were made over other labels; recomputing them", shard)
            missing.add(shard)
            continue
        keep = np.array([wanted is None or str(i) in wanted for i in arrays["ids"]], dtype=bool)
        ids += [str(i) for i in arrays["ids"][keep]]
        xs.append(arrays["embeddings"][keep].astype(np.float32))
        ps.append(arrays["probs"][keep].astype(np.float32))
    if labels is None:
        return None, missing
    x = np.concatenate(xs) if xs else np.zeros((0, 0), np.float32)
    if len(x):
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return EmbeddingSet(ids, x, np.concatenate(ps) if ps else np.zeros((0, len(labels)), np.float32), labels,
                        scorer), missing


def compute_missing(layout: Layout, records: Sequence[Record], shards: Iterable[str], scorer: Any,
                    labels: Sequence[str], images: Any, batch: int = 32) -> int:
    """Embed the images of ``shards`` that have no file (a run made before embeddings were kept).

    ``images(records)`` returns ``{id: PNG bytes}`` for the records it can find; ``scorer`` is a loaded
    scorer with ``encode_images`` and ``score``. Returns how many images were embedded.
    """
    from PIL import Image

    scorer.set_labels(list(labels))
    done = 0
    by_shard: dict[str, list[Record]] = {}
    for record in records:
        by_shard.setdefault(record.shard, []).append(record)
    for shard in sorted(set(shards)):
        group = [r for r in by_shard.get(shard, []) if r.status in ("kept", "rejected")]
        data = images(group)
        group = [r for r in group if data.get(r.id)]
        if not group:
            continue
        vectors: dict[str, Vectors] = {}
        for start in range(0, len(group), batch):
            chunk = group[start : start + batch]
            pictures = [Image.open(io.BytesIO(data[r.id])).convert("RGB") for r in chunk]
            scores = scorer.score(pictures, [r.prompt for r in chunk])
            for r, emb, probs in zip(chunk, scores.embeddings, scores.probs):
                vectors[r.id] = Vectors(np.asarray(emb, np.float32), np.asarray(probs, np.float32),
                                        tuple(scores.labels), scorer.name)
        arrays = shard_arrays([r.replace(vectors=vectors[r.id]) for r in group])
        if arrays is not None:
            write_shard(layout, shard, arrays)
            done += len(group)
    return done
