"""Shard intents and completion markers: what makes a run resumable, and what a run wrote.

A shard is a run of consecutive work units within a round (``r001-s0003``:
round 1, shard 3). Before any of its files is written, the ids of its
records go to ``OUT/shards/<shard>.intent.json`` (so ``--overwrite`` and the
stray sweeps know what a run wrote, even when it was killed mid-shard). When
all of a shard's files are in place, its records (metadata, no images) are
written to ``OUT/shards/<shard>.jsonl``, atomically and last: that file is
the completion marker; the intent is then removed. A resumed run replays the
markers it finds (so its quota rounds continue exactly where they stopped)
and redoes every shard without one, from scratch.

A marker is validated record by record (types, statuses, labels from the
run's label map); one that does not hold up (hand-edited, or from another
version) is set aside and its shard redone, never trusted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from dalle_data.errors import OutputDirError
from dalle_data.labels import LabelMap
from dalle_data.records import Record, reason_code, validate_record
from dalle_data.rundir.layout import Layout
from dalle_data.files import atomic_write_bytes, ensure_dir, remove_file, write_jsonl

log = logging.getLogger(__name__)


class ShardStore:
    def __init__(self, layout: Layout | Path, labels: LabelMap | None = None) -> None:
        self.layout = layout if isinstance(layout, Layout) else Layout(Path(layout))
        self.labels = labels
        self.dir = self.layout.shards
        self.replayed = 0

    def load(self, shard: str, unit_ids: Sequence[str] | None) -> list[Record] | None:
        """The shard's records if it finished with exactly these units (any, for ``None``), else None (redo it)."""
        path = self.layout.marker(shard)
        if not path.is_file():
            return None
        try:
            records = self.read(shard)
        except ValueError as err:
            log.warning("shard marker %s does not hold up (%s); redoing the shard", path, err)
            remove_file(path)
            return None
        if unit_ids is not None and [r.id for r in records] != list(unit_ids):
            log.warning("shard %s on disk holds other work than planned; redoing it", shard)
            return None
        self.replayed += 1
        return records

    def read(self, shard: str) -> list[Record]:
        """The validated records of a marker; raises ``ValueError`` (or ``OutputDirError`` when unreadable)."""
        path = self.layout.marker(shard)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise OutputDirError(f"shard marker {path} is unreadable ({err})") from None
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                records.append(self._checked(validate_record(json.loads(line), f"line {number}"), number))
        return records

    def _checked(self, record: Record, number: int) -> Record:
        code = reason_code(record.reject_reason, record.status)
        if code != record.reject_reason:
            record = record.replace(reject_reason=code, reject_detail=record.reject_detail or (
                record.reject_reason if record.status == "rejected" else None))
        if self.labels is None:
            return record
        try:
            entry = self.labels.entry(record.label)
        except KeyError:
            raise ValueError(f"line {number}: label {record.label!r} is not in the run's label map") from None
        if record.label_id != entry.id or record.class_dir != entry.folder:  # a run made before labels.json
            record = record.replace(label_id=entry.id, class_dir=entry.folder)
        return record

    def begin(self, shard: str, ids: Sequence[str]) -> None:
        """Record the ids a shard is about to write, before any of its files (with those of an earlier try)."""
        ensure_dir(self.dir)
        path = self.layout.intent(shard)
        earlier: list[str] = []
        if path.is_file():
            try:
                earlier = [str(i) for i in json.loads(path.read_text(encoding="utf-8")).get("ids", [])]
            except (OSError, ValueError, AttributeError):
                earlier = []
        ids = list(dict.fromkeys([*earlier, *ids]))
        atomic_write_bytes(path, json.dumps({"shard": shard, "ids": ids}).encode("utf-8"))

    def intents(self) -> dict[str, list[str]]:
        """Shards begun but not finished, and the ids they meant to write."""
        return {shard: ids for shard, ids in self.recorded(markers=False).items()}

    def commit(self, shard: str, records: Sequence[Record]) -> None:
        write_jsonl(self.layout.marker(shard), [r.metadata() for r in records])
        remove_file(self.layout.intent(shard))

    def shards(self) -> list[str]:
        """Shards with a marker, sorted."""
        if not self.dir.is_dir():
            return []
        return sorted(p.name[: -len(".jsonl")] for p in self.dir.glob("*.jsonl") if not p.name.startswith("."))

    def recorded(self, markers: bool = True) -> dict[str, list[str]]:
        """Every shard a run began (or, with ``markers``, finished) here, and the record ids it wrote or meant to write."""
        out: dict[str, list[str]] = {}
        if not self.dir.is_dir():
            return out
        for path in sorted(self.dir.iterdir()):
            name = path.name
            try:
                if name.endswith(".intent.json"):
                    data = json.loads(path.read_text(encoding="utf-8"))
                    out.setdefault(name[: -len(".intent.json")], []).extend(str(i) for i in data.get("ids", []))
                elif markers and name.endswith(".jsonl") and not name.startswith("."):
                    ids = [str(json.loads(line).get("id")) for line in path.read_text(encoding="utf-8").splitlines()
                           if line.strip()]
                    out.setdefault(name[: -len(".jsonl")], []).extend(ids)
            except (OSError, ValueError, AttributeError) as err:
                log.warning("cannot read %s (%s); its files are not counted as the run's", path, err)
        return out
