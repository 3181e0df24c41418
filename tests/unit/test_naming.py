from __future__ import annotations

import pytest

from dalle_data.errors import SpecError
from dalle_data.naming import MAX_DIR_BYTES, class_dirs, clean_class_names, safe_dir_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [("dalmatian", "dalmatian"), ("Golden Retriever", "golden_retriever"), ("a/b", "a_b"),
     ("../x", "x"), ("CON", "con_"), ("nul.txt", "nul_.txt"), ("tab\there", "tab_here")],
)
def test_safe_dir_name(name: str, expected: str) -> None:
    assert safe_dir_name(name) == expected


@pytest.mark.parametrize("name", [".", "..", "///", "\x00\x01", "é" * 300, "x" * 1000])
def test_safe_dir_name_is_never_empty_dotted_or_too_long(name: str) -> None:
    d = safe_dir_name(name)
    assert d and d not in {".", ".."} and "/" not in d and "\\" not in d
    assert len(d.encode()) <= MAX_DIR_BYTES


def test_colliding_names_get_distinct_order_independent_dirs() -> None:
    a = class_dirs(["Golden Retriever", "golden_retriever", "cat"])
    b = class_dirs(["cat", "golden_retriever", "Golden Retriever"])
    assert a == b
    assert len(set(a.values())) == 3
    assert a["cat"] == "cat"


def test_reserved_dir_names_are_avoided() -> None:
    dirs = class_dirs(["hard_negative", "cat"], reserved=["hard_negative"])
    assert dirs["hard_negative"] != "hard_negative" and dirs["cat"] == "cat"


def test_clean_class_names_trims_and_keeps_labels() -> None:
    assert clean_class_names(["  a/b ", "Café"]) == ["a/b", "Café"]


@pytest.mark.parametrize("names", [[], [""], [" "], ["cat", "CAT"]])
def test_clean_class_names_rejects(names: list[str]) -> None:
    with pytest.raises(SpecError):
        clean_class_names(names)
