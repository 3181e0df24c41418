"""Nothing in OUT is trusted as written: a hand-edited spec or marker is refused or redone, never obeyed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST, copy_run, generate_run


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_run(tmp_path_factory, "trust", "--classes", "cat,dog", "--per-class", "2", "--filter", "none", "--shard-size", "2", "--format", "parquet", "--format", "imagefolder")


@pytest.fixture()
def run_dir(base: Path, tmp_path: Path) -> Path:
    return copy_run(base, tmp_path)


def edit_spec(out: Path, **changes) -> None:
    data = yaml.safe_load((out / "spec.yaml").read_text())
    data.update(changes)
    (out / "spec.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def decide_reject(out: Path) -> str:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    victim = sorted(r["id"] for r in rows if r["status"] == "kept")[0]
    line = {"v": 1, "time": "2026-01-01T00:00:00+00:00", "spec_hash": rows and yaml.safe_load(
        (out / "spec.yaml").read_text())["spec_hash"], "session": "x", "id": victim, "action": "reject",
        "label": None, "was": "cat", "undo": False}
    (out / "review").mkdir(exist_ok=True)
    (out / "review" / "decisions.jsonl").write_text(json.dumps(line) + "\n")
    return victim


def test_a_split_that_escapes_out_is_refused_and_nothing_outside_is_written(run_dir: Path, cli) -> None:
    victim_dir = run_dir.parent / "victim"
    victim_dir.mkdir()
    (victim_dir / "part-r001-s0000.parquet").write_bytes(b"precious")
    decide_reject(run_dir)
    edit_spec(run_dir, split="../../victim")
    for args in (["review", run_dir, "--apply"], ["review", run_dir, "--format", "json"], ["verify", run_dir]):
        result = cli(*args)
        assert result.exit_code == 2, result.stdout
        assert len(result.stderr.strip().splitlines()) == 1 and "spec.yaml" in result.stderr
    assert (victim_dir / "part-r001-s0000.parquet").read_bytes() == b"precious"


def test_a_reordered_class_list_is_refused_not_relabelled(run_dir: Path, cli) -> None:
    before = (run_dir / "manifest.jsonl").read_bytes()
    decide_reject(run_dir)
    edit_spec(run_dir, classes=["dog", "cat"])
    result = cli("review", run_dir, "--apply")
    assert result.exit_code == 2 and "spec.yaml" in result.stderr and "classes" in result.stderr, result.stderr
    assert (run_dir / "manifest.jsonl").read_bytes() == before


def test_resume_after_a_hand_edited_spec_says_what_differs(run_dir: Path, cli) -> None:
    edit_spec(run_dir, per_class=5)
    result = cli("generate", "--resume", run_dir)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "per_class: 2 there, 5 now" in line and "edited" in line, line


def test_a_marker_with_wrong_types_or_labels_is_redone_not_trusted(run_dir: Path, tmp_path: Path, cli) -> None:
    reference = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*.png")}
    markers = sorted((run_dir / "shards").glob("*.jsonl"))
    rows = [json.loads(line) for line in markers[0].read_text().splitlines()]
    rows[0]["seed"] = "not a number"
    markers[0].write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = [json.loads(line) for line in markers[1].read_text().splitlines()]
    rows[0]["label"] = "zebra"  # a label the run does not have
    markers[1].write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "_SUCCESS").unlink()
    (run_dir / "summary.json").unlink()  # unfinished again: the markers are replayed
    result = cli("generate", "--resume", run_dir, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["shards_resumed"] == summary["shards"] - 2  # the two bad markers were redone
    assert {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*.png")} == reference
    for marker in sorted((run_dir / "shards").glob("*.jsonl")):
        for row in map(json.loads, marker.read_text().splitlines()):
            assert isinstance(row["seed"], int) and row["label"] in ("cat", "dog")


def test_empty_negative_label_is_refused(tmp_path: Path, cli) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("classes: [cat]\nper_class: 1\nmodes: [vanilla, adversarial]\nnegative_label: ''\n")
    result = cli("generate", "--config", spec, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "negative_label" in result.stderr
    assert not (tmp_path / "o").exists()


def test_a_bom_in_the_classes_file_is_not_part_of_a_name(tmp_path: Path, cli) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffcat\ndog\n".encode("utf-8"))
    result = cli("generate", *FAST, "--classes-file", classes, "--per-class", "1", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["classes"] == ["cat", "dog"]
