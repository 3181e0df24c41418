"""The image sets a probe trains and tests on, and the test images' groups.

* a dalle-data output's kept positive images (``from_output``), or its rejected
  ones (``rejected_from_output``, for ``--ablate filter``);
* a real labeled ImageFolder (``from_imagefolder``): ``root/<class>/<image>``,
  folders matched to class names exactly or by their safe folder name
  ("red circle" ↔ "red_circle"); its ``metadata.jsonl``, when there is one,
  gives each image's groups (``dalle-data demo-real`` writes one).

Groups are string fields of ``metadata.jsonl`` (or of ``--groups FILE``, the
same format: one JSON object per line with ``file_name``, relative to the
test folder, or ``path``), other than the file and label fields; a field with
more than ``MAX_GROUP_VALUES`` distinct values (a prompt, an id) is not a
group and is left out with a warning.

An unreadable image (empty, truncated, not an image) in any set is skipped
with one warning line per set, as ``generate`` treats bad sources. A set none
of whose files can be read is an error.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle_data.errors import SpecError
from dalle_data.naming import safe_dir_name
from dalle_data.review.apply import recover
from dalle_data.rundir import open_run
from dalle_data.sources import IMAGE_SUFFIXES, SourceError, load_rgb
from dalle_data.verify import writer_context
from dalle_data.writers.base import destination
from dalle_data.writers.formats import read_back

log = logging.getLogger("dalle_data.probe")  # one logger for the command, as before it was a package

MAX_REASONS = 3  # unreadable files named in a warning or error line
MAX_GROUP_VALUES = 32  # a field with more distinct values is not a group
NOT_GROUPS = frozenset({"file_name", "path", "label", "label_name", "label_id", "id", "class"})
METADATA = "metadata.jsonl"


@dataclass
class LabeledImages:
    paths: list[str]
    labels: list[str]
    data: list[bytes | None]
    groups: list[dict[str, str]] | None = None  # per image, when the set has them


@dataclass
class Loaded:
    """The readable images of a set, with their labels and groups, and how many files were skipped."""

    images: list[Any]
    labels: list[str]
    paths: list[str]
    skipped: int
    groups: list[dict[str, str]] | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # a learner's features, by learner key


def from_output(out: Path) -> LabeledImages:
    """The positive kept images of a dalle-data output, with their class names (read through its records)."""
    labeled = _run_images(out, "dataset")
    if not labeled.paths:
        raise SpecError(f"--train {out}: no kept images found (is it a dalle-data output?)")
    return labeled


def rejected_from_output(out: Path) -> LabeledImages:
    """The rejected positive images of a dalle-data output (made with ``--keep-rejected``); may be empty."""
    recover(out)
    if not open_run(out).spec.keep_rejected:
        raise SpecError(f"--ablate filter needs the rejected images: rerun generate with --keep-rejected into {out}")
    return _run_images(out, "rejected")


def _run_images(out: Path, where: str) -> LabeledImages:
    """The positive images a run's records place in its dataset (or rejected set): the run's files only,
    from its ImageFolder tree when it has one, else from its Parquet parts (``Format.read_rank``)."""
    recover(out)  # a cut-off review --apply is finished first (commands do this, the reader does not)
    run = open_run(out)
    layout, ctx = run.layout, writer_context(run)
    records = [r for r in run.records() if destination(r, ctx) == where and r.role == "positive"]
    fmt, images = read_back(layout, run.spec.formats, records, where)  # type: ignore[arg-type]
    data = [d if d is not None or fmt is None or not fmt.inline else b"" for _, d in images]
    return LabeledImages([path for path, _ in images], [r.label for r, _ in zip(records, images)], data)


def from_imagefolder(root: Path, classes: Sequence[str], flag: str = "--test", *,
                     with_groups: bool = True) -> LabeledImages:
    """A real ImageFolder (``root/<class>/<image>``), folders mapped onto ``classes``; groups from its metadata.

    Folders that are not classes are skipped with one warning line; a class
    with no folder is named in a warning (its accuracy cannot be measured).
    """
    if not root.is_dir():
        raise SpecError(f"{flag} {root}: no such directory")
    by_folder = {safe_dir_name(c): c for c in classes} | {c: c for c in classes}
    paths, labels, strays = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = by_folder.get(folder.name)
        if label is None:
            strays.append(folder.name)
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(f))
                labels.append(label)
    if not paths:
        raise SpecError(f"{flag} {root}: no images in folders named after the run's classes ({', '.join(classes)})")
    if strays:
        log.warning("%s %s: skipped %d folder(s) that are not classes of the run: %s", flag, root, len(strays),
                    ", ".join(strays[:MAX_REASONS]) + (f" and {len(strays) - MAX_REASONS} more" if len(strays) > MAX_REASONS else ""))
    absent = [c for c in classes if c not in set(labels)]
    if absent:
        log.warning("%s %s: no images of %d class(es) of the run: %s", flag, root, len(absent), ", ".join(absent))
    images = LabeledImages(paths, labels, [None] * len(paths))
    if with_groups and (root / METADATA).is_file():
        images.groups = read_groups(root / METADATA, images, root, strict=False)
    return images


def read_groups(file: Path, images: LabeledImages, root: Path, *, strict: bool = True) -> list[dict[str, str]]:
    """Each image's groups from a JSONL file (``file_name`` relative to ``root``, or ``path``).

    A malformed line, or (``strict``) a line naming no image of the set, is a
    one-line error naming the file and line; images the file does not name get
    no groups (a warning with their count).
    """
    index = {os.path.abspath(p): i for i, p in enumerate(images.paths)}
    found: list[dict[str, str] | None] = [None] * len(images.paths)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{file}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    for number, row in jsonl_objects(file, "\n".join(lines), "with file_name and group fields"):
        if not isinstance(row.get("file_name", row.get("path")), str):
            raise SpecError(f"{file}:{number}: a line needs file_name (relative to {root}) or path")
        name = row.get("file_name")
        path = os.path.abspath(root / name) if isinstance(name, str) else os.path.abspath(row["path"])
        if path not in index:
            if strict:
                raise SpecError(f"{file}:{number}: {name or row['path']} is not an image of the test set {root}")
            continue
        found[index[path]] = {k: v for k, v in row.items() if k not in NOT_GROUPS and isinstance(v, str)}
    unnamed = sum(g is None for g in found)
    if unnamed:
        log.warning("%s names no groups for %d of the %d test images; they count in every figure but the groups'",
                    file, unnamed, len(found))
    groups = [g or {} for g in found]
    values: dict[str, set[str]] = {}
    for g in groups:
        for k, v in g.items():
            values.setdefault(k, set()).add(v)
    wide = sorted(k for k, vs in values.items() if len(vs) > MAX_GROUP_VALUES)
    if wide:
        log.warning("%s: %s not group field(s): more than %d distinct values", file, ", ".join(wide), MAX_GROUP_VALUES)
    return [{k: v for k, v in g.items() if k not in wide} for g in groups]


def jsonl_objects(file: Path, text: str, fields: str) -> list[tuple[int, dict[str, Any]]]:
    """The JSON object on each non-blank line of ``text`` (read from ``file``), with its line number; anything
    else is a one-line error naming the file, the line and what a line holds (``fields``)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise SpecError(f"{file}:{number}: not a JSON object (one per line, {fields})")
        rows.append((number, row))
    return rows


def load_readable(images: LabeledImages, what: str) -> Loaded:
    """The readable images with their labels and groups; each other file is named in one warning line.

    ``what`` names the set in messages (``--test DIR``). Raises ``SpecError``
    when the set has files but none of them can be read.
    """
    loaded, labels, paths, groups, reasons = [], [], [], [], []
    for i, (path, label, data) in enumerate(zip(images.paths, images.labels, images.data)):
        try:
            loaded.append(load_rgb(data if data is not None else Path(path), None, path))
        except SourceError as err:
            reasons.append(str(err))
            continue
        labels.append(label)
        paths.append(path)
        if images.groups is not None:
            groups.append(images.groups[i])
    if reasons:
        total = len(images.paths)
        named = "; ".join(reasons[:MAX_REASONS])
        if len(reasons) > MAX_REASONS:
            named += f"; and {len(reasons) - MAX_REASONS} more"
        if not loaded:
            raise SpecError(f"{what}: none of its {_files(total, 'image file')} could be read ({named})")
        log.warning("%s: skipped %s of %d (%s)", what, _files(len(reasons), "unreadable file"), total, named)
    return Loaded(loaded, labels, paths, len(reasons), groups if images.groups is not None else None)


def _files(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
