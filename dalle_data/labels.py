"""The run's one label map: label id ↔ class name ↔ folder ↔ role.

Every output of a run numbers its classes the same way, whatever order the
classes were given in: ids follow the **sorted folder names**, because that
is how ``torchvision.datasets.ImageFolder`` (and the Hugging Face
``imagefolder`` loader without metadata) number classes, and a folder tree
cannot carry any other order. The Parquet ``ClassLabel``, the ImageFolder
card and ``metadata.jsonl``, the manifest, the summary, review and probe all
use this map, and it is written once as ``OUT/labels.json``::

    {"version": 1, "spec_hash": "…", "labels": [
        {"id": 0, "label": "alpha", "folder": "alpha", "role": "positive"},
        {"id": 1, "label": "hard_negative", "folder": "hard_negative", "role": "hard_negative"},
        {"id": 2, "label": "Zeta/Eta", "folder": "zeta_eta", "role": "positive"}]}

``role`` is ``positive`` for a class and ``hard_negative`` for the run's
hard-negative label (adversarial images). A relabel by ``review --apply``
moves an image to another entry of the same map; the map itself never
changes for a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dalle_data.errors import OutputDirError
from dalle_data.naming import class_dirs

LABELS_VERSION = 1
ROLES = ("positive", "hard_negative")


@dataclass(frozen=True, slots=True)
class LabelEntry:
    id: int
    label: str
    folder: str
    role: str

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "folder": self.folder, "role": self.role}


@dataclass(frozen=True)
class LabelMap:
    """The entries in id order (= sorted folder order)."""

    entries: tuple[LabelEntry, ...]

    @classmethod
    def build(cls, classes: Sequence[str], negative_label: str | None = None) -> LabelMap:
        """The map of a run with ``classes`` (and a hard-negative label when it makes adversarial images)."""
        names = list(classes) + ([negative_label] if negative_label is not None else [])
        folders = class_dirs(names)
        ordered = sorted(names, key=lambda name: (folders[name], name))
        return cls(tuple(
            LabelEntry(i, name, folders[name], "hard_negative" if name == negative_label else "positive")
            for i, name in enumerate(ordered)
        ))

    # --- lookups ---------------------------------------------------------------
    def __iter__(self) -> Iterator[LabelEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in id order: the ``ClassLabel`` names."""
        return tuple(e.label for e in self.entries)

    @property
    def folders(self) -> tuple[str, ...]:
        return tuple(e.folder for e in self.entries)

    @property
    def negative_label(self) -> str | None:
        return next((e.label for e in self.entries if e.role == "hard_negative"), None)

    @property
    def classes(self) -> tuple[str, ...]:
        """The positive classes, in id order."""
        return tuple(e.label for e in self.entries if e.role == "positive")

    def entry(self, label: str) -> LabelEntry:
        index = self.__dict__.get("_by_label")
        if index is None:  # built once: runs may have tens of thousands of classes
            index = {e.label: e for e in self.entries}
            object.__setattr__(self, "_by_label", index)
        return index[label]

    def id_of(self, label: str) -> int:
        return self.entry(label).id

    def folder_of(self, label: str) -> str:
        return self.entry(label).folder

    def label_of_folder(self, folder: str) -> str | None:
        index = self.__dict__.get("_by_folder")
        if index is None:
            index = {e.folder: e.label for e in self.entries}
            object.__setattr__(self, "_by_folder", index)
        return index.get(folder)

    def folder_map(self) -> dict[str, str]:
        return {e.label: e.folder for e in self.entries}

    # --- on disk ---------------------------------------------------------------
    def as_json(self, spec_hash: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"version": LABELS_VERSION}
        if spec_hash is not None:
            data["spec_hash"] = spec_hash
        data["labels"] = [e.as_json() for e in self.entries]
        return data

    def to_text(self, spec_hash: str | None = None) -> str:
        return json.dumps(self.as_json(spec_hash), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, data: Any, where: str = "labels.json") -> LabelMap:
        """Validate a parsed ``labels.json``; raises ``OutputDirError`` in one line."""
        rows = data.get("labels") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not rows:
            raise OutputDirError(f"{where} is not a dalle-data label map (no labels list)")
        entries = []
        for i, row in enumerate(rows):
            ok = (isinstance(row, dict) and row.get("id") == i and isinstance(row.get("label"), str)
                  and isinstance(row.get("folder"), str) and row.get("role") in ROLES)
            if not ok:
                raise OutputDirError(f"{where}: entry {i} is not {{id: {i}, label, folder, role}}")
            if not _safe_folder(row["folder"]):
                raise OutputDirError(f"{where}: folder {row['folder']!r} is not a safe folder name")
            entries.append(LabelEntry(i, row["label"], row["folder"], row["role"]))
        if len({e.folder for e in entries}) != len(entries) or len({e.label for e in entries}) != len(entries):
            raise OutputDirError(f"{where}: labels or folders repeat")
        return cls(tuple(entries))


def _safe_folder(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\x00")
