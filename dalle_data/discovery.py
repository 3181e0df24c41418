"""Which source images ``--from DIR`` names (the pictures themselves are ``dalle_data.sources``').

``--from DIR`` may be:

* an ImageFolder tree, ``DIR/<class>/<image>``: the folder name is the class;
* a dalle-data output (``DIR/spec.yaml``): its kept images, with their labels
  and ids (read from ``imagefolder/<split>/`` or ``parquet/<split>/``);
* a flat folder of images plus ``--classes NAME`` (exactly one class).

A URL is copied to a local cache once. Only files are listed here; images are
opened when a unit needs them.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

from dalle_data.errors import SpecError
from dalle_data.naming import safe_dir_name
from dalle_data.remote import cache_dir, is_url, local_path, pull_sources
from dalle_data.rundir import open_run
from dalle_data.sources import IMAGE_SUFFIXES, Source
from dalle_data.writers.formats import read_back


def _file_id(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    stat = path.stat()
    return hashlib.sha256(f"{rel}\x1f{stat.st_size}".encode()).hexdigest()[:16]


def _images_in(folder: Path) -> list[Path]:
    """Files with an image suffix (others, such as notes.txt or Thumbs.db, are not sources)."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_name(folder: Path) -> str:
    """A folder's class name, normalized as class names are (NFC, trimmed)."""
    return unicodedata.normalize("NFC", folder.name).strip()


def source_root(from_dir: str | None) -> Path | None:
    """Where ``--from``'s images lie on this machine (a URL's local copy)."""
    if not from_dir:
        return None
    return cache_dir(from_dir, "sources") if is_url(from_dir) else Path(local_path(from_dir)).expanduser()


def discover_sources(root: str | Path, classes: list[str] | None = None) -> list[Source]:
    """List the sources under ``root`` (see module docstring; a URL is copied to a local cache once)."""
    root = pull_sources(str(root)) if is_url(root) else Path(local_path(str(root))).expanduser()
    if not root.is_dir():
        raise SpecError(f"--from {root}: no such directory")
    if (root / "spec.yaml").is_file():
        sources = _from_run(root)
    else:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if subdirs:
            sources = [Source(_file_id(f, root), _class_name(d), str(f)) for d in subdirs for f in _images_in(d)]
        elif not _images_in(root):
            raise SpecError(f"--from {root}: no source images found (an empty folder)")
        else:
            if not classes or len(classes) != 1:
                raise SpecError(
                    f"--from {root} is a flat folder: name its one class with --classes NAME "
                    "(or arrange the images as <class>/<image>)"
                )
            sources = [Source(_file_id(f, root), classes[0], str(f)) for f in _images_in(root)]
    if classes is not None:
        # Folders may be named after a class or after its safe folder name ("red_circle" for "red circle").
        by_folder = {safe_dir_name(c): c for c in classes} | {c: c for c in classes}
        sources = [Source(s.id, by_folder[s.label], s.path, s.data) for s in sources if s.label in by_folder]
    if not sources:
        raise SpecError(f"--from {root}: no source images found" + (f" for {', '.join(classes)}" if classes else ""))
    return sources


def _from_run(root: Path) -> list[Source]:
    """The kept images of a dalle-data output, labels and ids from its records (read through its run reader)."""
    run = open_run(root)
    layout = run.layout
    kept = [r for r in run.records() if r.status == "kept"]
    _, images = read_back(layout, run.spec.formats, kept, "dataset")
    return [Source(r.id, r.label, path, data) for r, (path, data) in zip(kept, images)]


def sources_digest(sources: list[Source]) -> str:
    blob = "\n".join(f"{s.id}\x1f{s.label}\x1f{s.path}" for s in sources)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
