"""Folder names that stay safe on Windows and readable everywhere; labels that differ only by ß stay apart."""

from __future__ import annotations

import unicodedata

import pytest

from dalle_data.errors import SpecError
from dalle_data.naming import MAX_DIR_BYTES, class_dirs, clean_class_names, safe_dir_name

# Windows treats these as devices whatever follows the first dot ("nul.txt" is NUL).
DEVICES = ["con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10)),
           "com¹", "com²", "com³", "lpt¹", "lpt²", "lpt³"]

BIDI_AND_INVISIBLE = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
                      "\u200e", "\u200f", "\u061c", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


def is_windows_device(folder: str) -> bool:
    """Whether Windows would open ``folder`` as a device: the part before the first dot, trailing spaces ignored."""
    return folder.split(".")[0].rstrip(" ").lower() in DEVICES


@pytest.mark.parametrize(("name", "expected"), [
    ("nul.txt", "nul_.txt"), ("COM1.tar.gz", "com1_.tar.gz"), ("con.", "con_"), ("Aux.Dog", "aux_.dog"),
    ("COM¹", "com¹_"), ("LPT³", "lpt³_"), ("com².txt", "com²_.txt"), ("lpt¹.a.b", "lpt¹_.a.b"),
    ("console", "console"), ("nul_x.txt", "nul_x.txt"), ("com10", "com10"), ("my.nul", "my.nul"),
])
def test_windows_device_names_with_extensions(name: str, expected: str) -> None:
    assert safe_dir_name(name) == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tail", ["", ".txt", ".tar.gz", ".", " .txt", "  "])
def test_no_folder_is_a_windows_device(device: str, tail: str) -> None:
    names = [device + tail, device.upper() + tail]  # the same folder: both get a hash suffix
    for name in names:
        assert not is_windows_device(safe_dir_name(name)), (name, safe_dir_name(name))
    dirs = class_dirs(names)
    assert len(set(dirs.values())) == 2 and not any(is_windows_device(d) for d in dirs.values()), dirs


@pytest.mark.parametrize("char", BIDI_AND_INVISIBLE)
def test_bidi_and_zero_width_characters_never_reach_a_folder_name(char: str) -> None:
    for name in (f"cat{char}", f"{char}gpj.exe", f"a{char}b c", char, char * 3, f"nul{char}.txt"):
        folder = safe_dir_name(name)
        assert folder and not any(c in folder for c in BIDI_AND_INVISIBLE), (name, folder)
        assert not any(unicodedata.category(c) == "Cf" for c in folder), (name, folder)
        assert not is_windows_device(folder)
    assert safe_dir_name(f"ab{char}c") == "abc"


def test_names_made_only_of_invisible_characters_get_distinct_folders() -> None:
    names = clean_class_names(["\u200b", "\u200b\u200b", "\u202e", "\ufeff\u2060"])
    dirs = class_dirs(names)
    assert len(set(dirs.values())) == len(names)
    assert all(d and d.isascii() and d.isprintable() for d in dirs.values()), dirs
    assert class_dirs(list(reversed(names))) == dirs


def test_a_name_that_differs_only_by_an_invisible_character_gets_its_own_folder() -> None:
    dirs = class_dirs(["cat", "cat\u200b"])
    assert len({d.casefold() for d in dirs.values()}) == 2
    assert class_dirs(["cat\u200b", "cat"]) == dirs
    assert all("\u200b" not in d and len(d.encode()) <= MAX_DIR_BYTES for d in dirs.values())


def test_sharp_s_is_not_a_duplicate_of_double_s() -> None:
    assert clean_class_names(["Maße", "Masse"]) == ["Maße", "Masse"]
    dirs = class_dirs(["Maße", "Masse"])
    assert dirs == class_dirs(["Masse", "Maße"])  # order-independent
    # distinct even where the filesystem folds case (and ß) the way casefold does
    assert len({d.casefold() for d in dirs.values()}) == 2
    assert dirs == class_dirs(["Maße", "Masse"])  # stable


@pytest.mark.parametrize("names", [
    ["Dog", "dog"], ["Maße", "MASSE", "maße"], ["Maße", "MAẞE"], ["Straße", "STRAẞE"], ["Café", "CAFE\u0301"],
    ["ΣΊΣΥΦΟΣ", "σίσυφοσ"],
])
def test_names_that_differ_only_by_case_are_still_duplicates(names: list[str]) -> None:
    with pytest.raises(SpecError, match="duplicate class"):
        clean_class_names(names)
