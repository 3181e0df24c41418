"""Prompt lists as JSONL: round trips, defaults and errors that name the line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dalle_data.errors import SpecError
from dalle_data.prompts import PromptItem, expand_prompts, load_pack, read_prompts_jsonl, write_prompts_jsonl


def write_lines(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_written_file_reads_back_identically(tmp_path: Path) -> None:
    items = [
        PromptItem("dalmatian", "vanilla", "A dalmatian in deep snow", "default:vanilla#0"),
        PromptItem("Café table", "style", 'A "café table", as an oil painting \u2028 ünïcødé 🐕', "user"),
        PromptItem("owl", "adversarial", "An owl-like lamp\nsecond line\ttab", "file:old.jsonl:3"),
    ]
    items += expand_prompts(load_pack(), ["frisbee"], ["vanilla", "style", "adversarial"], 5, seed=2)
    path = tmp_path / "prompts.jsonl"
    with path.open("w", encoding="utf-8") as fp:
        write_prompts_jsonl(items, fp)
    assert read_prompts_jsonl(path) == items
    assert "ünïcødé 🐕" in path.read_text(encoding="utf-8")  # readable, not \u-escaped


def test_written_lines_are_plain_objects_with_four_keys() -> None:
    buffer = io.StringIO()
    write_prompts_jsonl([PromptItem("owl", "style", "An owl, as pixel art", "default:style#3")], buffer)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "class": "owl", "mode": "style", "prompt": "An owl, as pixel art", "source": "default:style#3"
    }


def test_hand_written_lines_get_default_mode_and_source(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path,
        '{"class": "dalmatian", "prompt": "A dalmatian asleep on a sofa"}',
        "",
        "   ",
        '{"prompt": "A frisbee on a roof", "class": "frisbee", "mode": "style", "source": "me"}',
    )
    assert read_prompts_jsonl(str(path)) == [
        PromptItem("dalmatian", "vanilla", "A dalmatian asleep on a sofa", "file:prompts.jsonl:1"),
        PromptItem("frisbee", "style", "A frisbee on a roof", "me"),
    ]


def test_file_with_byte_order_mark_and_crlf_line_ends_reads(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes('\ufeff{"class": "owl", "prompt": "An owl"}\r\n{"class": "cat", "prompt": "A cat"}\r\n'.encode())
    assert [(i.cls, i.prompt, i.source) for i in read_prompts_jsonl(path)] == [
        ("owl", "An owl", "file:prompts.jsonl:1"),
        ("cat", "A cat", "file:prompts.jsonl:2"),
    ]


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ('{"class": "owl", "prompt": "An owl"', "not valid JSON"),
        ('["owl", "An owl"]', "expected a JSON object"),
        ('{"prompt": "An owl"}', "missing 'class'"),
        ('{"class": "  ", "prompt": "An owl"}', "'class' must be non-empty text"),
        ('{"class": "owl"}', "missing 'prompt'"),
        ('{"class": "owl", "prompt": ""}', "'prompt' must be non-empty text"),
        ('{"class": "owl", "prompt": 3}', "'prompt' must be non-empty text"),
        ('{"class": "owl", "prompt": "An owl", "mode": "inpaint"}', "unknown mode 'inpaint'"),
        ('{"class": "owl", "prompt": "An owl", "label": "owl"}', "unknown key 'label'"),
        ('{"class": "owl", "prompt": "An owl", "source": 7}', "'source' must be non-empty text"),
    ],
)
def test_each_bad_line_is_reported_with_its_line_number(tmp_path: Path, bad_line: str, fragment: str) -> None:
    path = write_lines(
        tmp_path,
        '{"class": "cat", "prompt": "A cat"}',
        "",
        bad_line,
        '{"class": "dog", "prompt": "A dog"}',
    )
    with pytest.raises(SpecError) as info:
        read_prompts_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path} line 3: ")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_file_without_prompts_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SpecError, match="has no prompts"):
        read_prompts_jsonl(path)


def test_missing_file_or_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        read_prompts_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(SpecError, match="is a directory"):
        read_prompts_jsonl(tmp_path)
