"""The card's body shows class names as text: no markup of theirs renders, fetches or splits a table."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.conftest import generate_run

HOSTILE = ['<img src="https://evil.example/a.png" onerror="alert(1)">', "![x](https://evil.example/b.png)",
           "x | y", "line\nbreak", "*bold* _under_ `tick` [link](https://evil.example/c) \\ #h ~s~ &amp;"]


class Tables(HTMLParser):
    """The rendered page's tags, and its tables' rows as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Tables:
    markdown_it = pytest.importorskip("markdown_it")
    spec = tmp_path_factory.mktemp("card-spec") / "spec.yaml"
    spec.write_text(yaml.safe_dump({"classes": HOSTILE, "per_class": 1}))
    out = generate_run(tmp_path_factory, "card", "--config", str(spec), "--filter", "none", "--batch-size", "2")
    body = (out / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[1]
    parser = Tables()  # as the Hub renders it: CommonMark with raw HTML, and GFM tables
    parser.feed(markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(body))
    return parser


def test_class_names_in_the_card_body_are_text_not_markup(page: Tables) -> None:
    assert not {"img", "a", "script", "iframe", "em", "strong", "h1"} & set(page.tags[page.tags.index("h2"):])


def test_each_class_is_one_row_of_the_per_class_table_named_as_written(page: Tables) -> None:
    header = next(i for i, row in enumerate(page.rows) if row and row[0] == "label")
    rows = page.rows[header + 1:header + 1 + len(HOSTILE)]
    assert all(len(row) == len(page.rows[header]) for row in rows), rows
    assert sorted(row[0] for row in rows) == sorted(name.replace("\n", "\\n") for name in HOSTILE)
