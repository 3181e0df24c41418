"""Class names as labels and as folder names.

A class name is a label first: it is kept exactly as the user wrote it (after
trimming surrounding white space). On disk it needs a folder name that is safe
on every common filesystem, never escapes the output directory and never
collides with another class's folder. ``class_dirs`` computes those.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence

from dalle_data.errors import SpecError

# Longest folder name we produce, in UTF-8 bytes. Filesystems allow 255; we stay
# well below so that ``<id>.png`` siblings and temporary suffixes always fit.
MAX_DIR_BYTES = 96

# Windows opens these as devices whatever follows the first dot ("nul.txt" is NUL), the
# superscript-digit ports included.
_WINDOWS_RESERVED = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in (*range(1, 10), "¹", "²", "³")),
    *(f"lpt{i}" for i in (*range(1, 10), "¹", "²", "³")),
}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]+')
_SPACES = re.compile(r"\s+")


def clean_class_names(names: Iterable[str]) -> list[str]:
    """Trim, validate and de-duplicate-check user class names.

    Raises ``SpecError`` for an empty list, an empty or blank name and for
    names that differ only by case (they would be the same class to a person
    and the same folder on case-insensitive filesystems). ``ß`` is not ``ss``
    (see ``duplicate_key``): ``Maße`` and ``Masse`` are two classes, whose
    folders ``class_dirs`` keeps apart.
    """
    cleaned: list[str] = []
    seen: dict[str, str] = {}
    for raw in names:
        name = unicodedata.normalize("NFC", raw).strip()
        if not name:
            raise SpecError("a class name is empty or only white space; remove it or give it a name")
        key = duplicate_key(name)
        if key in seen:
            raise SpecError(
                f"duplicate class {name!r} (same as {seen[key]!r} ignoring case); list each class once"
            )
        seen[key] = name
        cleaned.append(name)
    if not cleaned:
        raise SpecError("no classes given; pass --classes NAME (repeatable or comma-separated) or --classes-file FILE")
    return cleaned


def duplicate_key(name: str) -> str:
    """What two class names must differ in to be two classes: anything but case.

    Case-folded, except that ``ß`` is kept (``str.casefold`` turns it into ``ss``, which would make
    ``Maße`` and ``Masse`` one class); the capital ``ẞ`` counts as ``ß``.
    """
    text = unicodedata.normalize("NFC", name).replace("ẞ", "ß")
    return "ß".join(part.casefold() for part in text.split("ß"))


def _drop_invisible(text: str) -> str:
    """``text`` without format characters (Unicode category Cf): bidi controls (U+202A-U+202E,
    U+2066-U+2069, U+200E, U+200F, U+061C) that make a name display reordered, zero-width
    characters (U+200B-U+200D, U+2060, U+FEFF) that make two names look alike, soft hyphens."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")[:max_bytes]
    return encoded.decode("utf-8", errors="ignore")


def safe_dir_name(name: str) -> str:
    """A folder name for ``name`` that is safe on Linux, macOS and Windows.

    Lower-cased, invisible format characters (bidi controls, zero-width
    characters) dropped, white space to ``_``, separators, control and
    reserved characters replaced, no leading or trailing dots, Windows device
    names suffixed before their first dot (``nul.txt`` → ``nul_.txt``), at
    most ``MAX_DIR_BYTES`` bytes. Names that had to be shortened or that became
    empty carry a hash of the original so they stay distinct.
    """
    text = _drop_invisible(unicodedata.normalize("NFC", name)).strip().lower()
    text = _SPACES.sub("_", text)
    text = _UNSAFE.sub("_", text)
    text = text.strip(" ._")
    if not text:
        return f"class-{_short_hash(name)}"
    stem, dot, rest = text.partition(".")
    if stem in _WINDOWS_RESERVED:
        text = f"{stem}_{dot}{rest}"
    if len(text.encode("utf-8")) > MAX_DIR_BYTES:
        text = f"{_truncate_utf8(text, MAX_DIR_BYTES - 9).rstrip('._ ')}-{_short_hash(name)}"
    return text


def class_dirs(names: Sequence[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """Map each class name to a unique safe folder name.

    When two names map to the same folder (``"Golden Retriever"`` and
    ``"golden_retriever"``) or to a reserved folder, every one of them gets a
    hash suffix of its original name, so the mapping does not depend on the
    order in which classes were listed.
    """
    taken = {r.casefold() for r in reserved}
    base = {name: safe_dir_name(name) for name in names}
    counts: dict[str, int] = {}
    for d in base.values():
        counts[d.casefold()] = counts.get(d.casefold(), 0) + 1
    result: dict[str, str] = {}
    for name, d in base.items():
        if counts[d.casefold()] > 1 or d.casefold() in taken:
            d = f"{_truncate_utf8(d, MAX_DIR_BYTES - 9)}-{_short_hash(name)}"
        result[name] = d
    return result
