"""The CI contract: exit codes, _SUCCESS only when complete, a versioned summary schema, reason codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FAST

# The random tiny scorer cannot meet a zero-shot quota for three classes within 6 attempts: a short run.
SHORT = [*FAST, "--classes", "cat,dog,car", "--per-class", "2", "--max-attempts", "6", "--format", "parquet"]
COMPLETE = [*FAST, "--classes", "cat,dog", "--per-class", "2", "--filter", "none", "--format", "parquet"]


def run(args: list[str], out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    from tests.warm_cli import dalle_data_command  # a process of its own, forked warm

    command, full_env = dalle_data_command({**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([*command, "generate", *args, "--out", str(out), *extra],
                          capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("short") / "out"
    return out, run(SHORT, out, "--json", env={"DALLE_DATA_HEARTBEAT": "0"})


def test_a_short_run_exits_3_with_one_line_and_no_success_marker(short_run) -> None:
    out, result = short_run
    summary = json.loads(result.stdout)
    assert summary["complete"] is False and summary["status"] == "short" and summary["exit_code"] == 3
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "short" in errors[0] and "--allow-short" in errors[0]
    assert not (out / "_SUCCESS").exists()
    assert json.loads((out / "summary.json").read_text())["status"] == "short"


def test_json_mode_still_reports_progress_on_stderr(short_run) -> None:
    _, result = short_run
    assert json.loads(result.stdout)  # stdout is the JSON alone
    assert "round 1:" in result.stderr
    assert "working:" in result.stderr  # the heartbeat (DALLE_DATA_HEARTBEAT=0: every update)


def test_a_short_run_rerun_says_already_finished_never_already_complete(short_run) -> None:
    out, _ = short_run
    again = run(SHORT, out, "--json")
    summary = json.loads(again.stdout)
    assert again.returncode == 3
    assert summary["already_finished"] is True and summary["already_complete"] is False
    assert summary["complete"] is False
    allowed = run(SHORT, out, "--json", "--allow-short")
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["status"] == "short"


def test_rejections_are_counted_by_code_with_details_per_record(short_run) -> None:
    from dalle_data.records import REASONS

    out, result = short_run
    summary = json.loads(result.stdout)
    assert summary["rejections"] and set(summary["rejections"]) <= set(REASONS)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert rejected and all(r["reject_reason"] in REASONS for r in rejected)
    assert all(r["reject_detail"] for r in rejected)  # the particulars stay with the record
    assert sum(summary["rejections"].values()) == sum(r["status"] != "kept" for r in rows)


def test_every_summary_holds_to_the_documented_schema(short_run, tmp_path: Path) -> None:
    from dalle_data.summary import Summary, json_schema

    out, result = short_run
    Summary.model_validate(json.loads(result.stdout))
    done = run(COMPLETE, tmp_path / "out", "--json")
    assert done.returncode == 0, done.stderr
    summary = Summary.model_validate(json.loads(done.stdout))
    assert summary.status == "complete" and (tmp_path / "out" / "_SUCCESS").is_file()
    documented = json.loads((Path(__file__).parents[2] / "docs" / "summary.schema.json").read_text())
    assert documented == json_schema(), "docs/summary.schema.json is out of date: regenerate it"
    assert documented["title"] == "dalle-data/summary/v2"


def test_outputs_name_only_what_exists(tmp_path: Path) -> None:
    # a single class with its negative vocabulary and the random tiny scorer: nothing passes in 2 tries
    result = run([*FAST, "--classes", "cat", "--per-class", "1", "--max-attempts", "2", "--format", "parquet",
                  "--format", "imagefolder", "--min-clip", "1.0"], tmp_path / "out", "--json")
    summary = json.loads(result.stdout)
    assert summary["kept"] == 0 and result.returncode == 3
    assert summary["outputs"] == {}
    assert set(summary["missing_outputs"]) == {"parquet", "imagefolder"}
    assert "no image was kept" in summary["missing_outputs"]["parquet"]
    assert not list((tmp_path / "out").glob("parquet/train/*.parquet"))
