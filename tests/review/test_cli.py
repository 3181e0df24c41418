"""`dalle-data review` without a browser: --format table|json, --export-html, one-line errors."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.review.conftest import lowest_ids

ITEM_KEYS = {
    "id", "label", "role", "imitates", "prompt", "prompt_source", "mode", "clip_score", "class_prob", "top_class",
    "width", "height", "seed", "source_id", "source_path", "source2_id", "source2_path", "mask", "shard",
    "why", "rank", "file", "decision", "applied",
}


def test_json_lists_the_selection_with_stable_keys(base_run: Path, cli) -> None:
    result = cli("review", base_run, "--lowest-clip", "2", "--random", "2", "--seed", "5", "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"out", "spec_hash", "selection", "kept", "progress", "decisions_file", "items"}
    assert data["selection"] == {"lowest": 2, "order": "clip", "second_scorer": None, "threshold": 0.95,
                                 "per_class": False, "random": 2, "seed": 5, "shuffle": False,
                                 "description": "the 2 lowest CLIP scores + 2 random (seed 5)",
                                 "title": "lowest CLIP score"}
    assert data["kept"] == 6 and data["progress"] == {"reviewed": 0, "total": 4}
    assert [item["why"] for item in data["items"]] == ["lowest", "lowest", "random", "random"]
    assert [item["id"] for item in data["items"][:2]] == lowest_ids(base_run, 2)
    for item in data["items"]:
        assert set(item) == ITEM_KEYS
        assert item["decision"] is None and item["applied"] is None
        assert (base_run / item["file"]).is_file()
    assert cli("review", base_run, "--lowest-clip", "2", "--random", "2", "--seed", "5", "--json").stdout == result.stdout


def test_per_class_json(base_run: Path, cli) -> None:
    data = json.loads(cli("review", base_run, "--lowest-clip", "1", "--per-class", "--json").stdout)
    assert [item["label"] for item in data["items"]] == ["cat", "dog", "hard_negative"]
    assert all(item["rank"] == 1 for item in data["items"])


def test_table_lists_the_same_selection(base_run: Path, cli) -> None:
    result = cli("review", base_run, "--lowest-clip", "3", "--format", "table")
    assert result.exit_code == 0, result.stderr
    for record_id in lowest_ids(base_run, 3):
        assert record_id in result.stdout
    assert "0 of 3 reviewed" in result.stdout
    # the decisions file is named only once there is one
    assert "no decisions yet" in result.stdout and "decisions.jsonl" not in result.stdout


def test_table_names_the_decisions_file_once_there_is_one(run_dir: Path, cli) -> None:
    from tests.review.test_apply import decide

    decide(run_dir, (lowest_ids(run_dir, 1)[0], "reject", None))
    result = cli("review", run_dir, "--lowest-clip", "3", "--format", "table")
    assert result.exit_code == 0, result.stderr
    assert "1 of 3 reviewed" in result.stdout and "decisions.jsonl" in " ".join(result.stdout.split())


def test_export_html_is_a_self_contained_contact_sheet(base_run: Path, cli, tmp_path: Path) -> None:
    sheet = tmp_path / "share" / "sheet.html"
    result = cli("review", base_run, "--lowest-clip", "4", "--export-html", sheet)
    assert result.exit_code == 0, result.stderr
    text = sheet.read_text()
    assert text.count('src="data:image/png;base64,') == 4
    assert "<script" not in text and not re.search(r"""(src|href)=["'](?!data:)""", text)
    for record_id in lowest_ids(base_run, 4):
        assert record_id in text
    assert "not reviewed" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--lowest-clip", "0"], "nothing to review"),
    (["--format", "xml"], "choose table or json"),
    (["--dry-run"], "--dry-run goes with --apply"),
    (["--apply", "--format", "table"], "run --format / --export-html separately"),
])
def test_bad_options_are_one_line_errors(base_run: Path, cli, args: list[str], message: str) -> None:
    result = cli("review", base_run, *args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_folder_without_a_run_is_a_one_line_error(cli, tmp_path: Path) -> None:
    for path, message in ((tmp_path / "missing", "does not exist"), (tmp_path, "holds no dalle-data run")):
        result = cli("review", path, "--json")
        assert result.exit_code == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_unfinished_run_says_how_to_finish_it(run_dir: Path, cli) -> None:
    (run_dir / "manifest.jsonl").unlink()
    result = cli("review", run_dir, "--json")
    assert result.exit_code == 2 and "generate --resume" in result.stderr


def test_a_busy_port_is_a_one_line_error(base_run: Path, cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("review", base_run, "--port", str(port), "--no-browser")
    assert result.exit_code == 2 and f"port {port} is in use" in result.stderr
