"""`dalle-data prompts` writes JSONL that `generate --prompts` uses as is."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import FAST


def test_prompts_to_stdout_are_jsonl_per_class_and_mode(cli) -> None:
    result = cli("prompts", "--classes", "cat,dog", "--mode", "vanilla", "--mode", "adversarial", "-n", "4")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 16
    assert {(r["class"], r["mode"]) for r in rows} == {(c, m) for c in ("cat", "dog") for m in ("vanilla", "adversarial")}
    assert all(set(r) == {"class", "mode", "prompt", "source"} for r in rows)


def test_edited_prompts_file_is_used_as_is(tmp_path: Path, cli) -> None:
    path = tmp_path / "p.jsonl"
    assert cli("prompts", "--classes", "cat", "-n", "3", "--out", path).exit_code == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["prompt"] = "a cat wearing a tiny hat, edited by hand"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("generate", *FAST, "--prompts", path, "--per-class", "3", "--filter", "none",
                 "--out", tmp_path / "o", "--json")
    assert result.exit_code == 0, result.stderr
    used = [json.loads(line)["prompt"] for line in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(used) == sorted(r["prompt"] for r in rows)


def test_prompts_file_class_outside_classes_is_an_error(tmp_path: Path, cli) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"class": "cat", "mode": "vanilla", "prompt": "a cat"}\n')
    result = cli("generate", *FAST, "--prompts", path, "--classes", "dog", "--per-class", "1", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "not in --classes" in result.stderr
