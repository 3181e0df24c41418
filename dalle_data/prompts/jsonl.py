"""Prompt lists as JSONL: one prompt per line, for people to read, edit and pass back.

Each line is an object such as::

    {"class": "dalmatian", "mode": "vanilla", "prompt": "A dalmatian in deep snow", "source": "default:vanilla#2"}

``class`` and ``prompt`` are required; ``mode`` defaults to ``vanilla``;
``source`` defaults to ``file:<file name>:<line number>``. Blank lines are
skipped. ``write_prompts_jsonl`` writes files that read back identically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from dalle_data.errors import SpecError
from dalle_data.prompts.templates import KNOWN_MODES, PromptItem

logger = logging.getLogger(__name__)

DEFAULT_MODE = "vanilla"
_KEYS = ("class", "mode", "prompt", "source")


def read_prompts_jsonl(path: str | Path) -> list[PromptItem]:
    """Read a prompt list; any problem raises ``SpecError`` naming the line."""
    file = Path(path)
    if file.is_dir():
        raise SpecError(f"{file} is a directory; pass a prompts .jsonl file")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError(f"prompts file {file} not found; check the path") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{file}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
    except OSError as exc:
        raise SpecError(f"cannot read prompts file {file}: {exc.strerror}; check the path and permissions") from exc
    items = [
        _parse_line(line, file, lineno)
        for lineno, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    if not items:
        example = '{"class": "dalmatian", "prompt": "A dalmatian on a beach"}'
        raise SpecError(f"{file} has no prompts; write one JSON object per line, e.g. {example}")
    logger.debug("read %d prompts from %s", len(items), file)
    return items


def _parse_line(line: str, file: Path, lineno: int) -> PromptItem:
    where = f"{file} line {lineno}"
    try:
        obj: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
        ) from None
    if not isinstance(obj, dict):
        raise SpecError(f"{where}: expected a JSON object with keys class, prompt (and optional mode, source)")
    unknown = sorted(set(obj) - set(_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(_KEYS)}")
    cls = _text(obj, "class", where)
    prompt = _text(obj, "prompt", where)
    mode = obj.get("mode", DEFAULT_MODE)
    if mode not in KNOWN_MODES:
        raise SpecError(f"{where}: unknown mode {mode!r}; use one of: {', '.join(KNOWN_MODES)}")
    source = obj.get("source")
    if source is None:
        source = f"file:{file.name}:{lineno}"
    elif not isinstance(source, str) or not source.strip():
        raise SpecError(f"{where}: 'source' must be non-empty text when given; remove it or fill it in")
    return PromptItem(cls=cls, mode=mode, prompt=prompt, source=source)


def _text(obj: dict[str, Any], key: str, where: str) -> str:
    if key not in obj:
        raise SpecError(f"{where}: missing {key!r}; every line needs \"class\" and \"prompt\"")
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}: {key!r} must be non-empty text, got {value!r}")
    return value


def write_prompts_jsonl(items: Iterable[PromptItem], fp: TextIO) -> None:
    """Write one JSON object per line (keys class, mode, prompt, source), UTF-8 as is."""
    for item in items:
        row = {"class": item.cls, "mode": item.mode, "prompt": item.prompt, "source": item.source}
        fp.write(json.dumps(row, ensure_ascii=False) + "\n")
