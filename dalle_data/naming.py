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

_WINDOWS_RESERVED = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]+')
_SPACES = re.compile(r"\s+")


def clean_class_names(names: Iterable[str]) -> list[str]:
    """Trim, validate and de-duplicate-check user class names.

    Raises ``SpecError`` for an empty list, an empty or blank name and for
    names that differ only by case (they would be the same class to a person
    and the same folder on case-insensitive filesystems).
    """
    cleaned: list[str] = []
    seen: dict[str, str] = {}
    for raw in names:
        name = unicodedata.normalize("NFC", raw).strip()
        if not name:
            raise SpecError("a class name is empty or only white space; remove it or give it a name")
        key = name.casefold()
        if key in seen:
            raise SpecError(
                f"duplicate class {name!r} (same as {seen[key]!r} ignoring case); list each class once"
            )
        seen[key] = name
        cleaned.append(name)
    if not cleaned:
        raise SpecError("no classes given; pass --classes NAME (repeatable or comma-separated) or --classes-file FILE")
    return cleaned


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")[:max_bytes]
    return encoded.decode("utf-8", errors="ignore")


def safe_dir_name(name: str) -> str:
    """A folder name for ``name`` that is safe on Linux, macOS and Windows.

    Lower-cased, white space to ``_``, separators, control and reserved
    characters replaced, no leading or trailing dots, Windows device names
    suffixed, at most ``MAX_DIR_BYTES`` bytes. Names that had to be shortened
    or that became empty carry a hash of the original so they stay distinct.
    """
    text = unicodedata.normalize("NFC", name).strip().lower()
    text = _SPACES.sub("_", text)
    text = _UNSAFE.sub("_", text)
    text = text.strip(" ._")
    if not text:
        return f"class-{_short_hash(name)}"
    if text.split(".")[0] in _WINDOWS_RESERVED:
        text = f"{text}_"
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
