"""`review --apply`: decisions into Parquet, ImageFolder and the manifest; idempotent; reversible."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dalle_data.review.apply import apply_decisions
from dalle_data.review.run import load_run
from dalle_data.review.selection import SelectionOptions
from dalle_data.review.session import ReviewSession
from tests.review.conftest import manifest, snapshot


def decide(out: Path, *decisions: tuple[str, str, str | None]) -> None:
    session = ReviewSession.open(out, SelectionOptions(lowest=100))
    for record_id, action, label in decisions:
        session.decide(json.dumps({"id": record_id, "action": action, "label": label}).encode())


def pick(out: Path) -> dict[str, dict]:
    """Three kept positives: one to reject, one to relabel, one to mark as a hard negative."""
    rows = [r for r in manifest(out).values() if r["role"] == "positive"]
    rows.sort(key=lambda r: r["id"])
    cat = [r for r in rows if r["label"] == "cat"]
    dog = [r for r in rows if r["label"] == "dog"]
    return {"reject": cat[0], "relabel": cat[1], "negative": dog[0]}


def parquet_rows(directory: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    if not directory.is_dir() or not any(directory.glob("*.parquet")):
        return {}
    return {r["id"]: r for r in pq.read_table(directory).to_pylist()}


def metadata(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    return {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_apply_rejects_relabels_and_marks_hard_negatives_in_every_format(run_dir: Path, cli) -> None:
    chosen = pick(run_dir)
    rej, rel, neg = chosen["reject"]["id"], chosen["relabel"]["id"], chosen["negative"]["id"]
    decide(run_dir, (rej, "reject", None), (rel, "relabel", "dog"), (neg, "hard_negative", None))
    result = cli("review", run_dir, "--apply")
    assert result.exit_code == 0, result.stderr
    assert re.search(r"rejected +1 ", result.stdout) and re.search(r"relabeled +1 +cat → dog ×1", result.stdout)
    assert re.search(r"hard negative +1", result.stdout)
    assert "Kept now: cat 0, dog 2, hard_negative 3" in result.stdout

    rows = manifest(run_dir)
    assert (rows[rej]["status"], rows[rej]["kept"], rows[rej]["reject_reason"]) == ("rejected", False, "review")
    assert (rows[rel]["label"], rows[rel]["label_id"], rows[rel]["class_dir"]) == ("dog", 1, "dog")
    assert (rows[neg]["label"], rows[neg]["role"], rows[neg]["imitates"], rows[neg]["label_id"]) == (
        "hard_negative", "hard_negative", "dog", 2)

    kept = parquet_rows(run_dir / "parquet" / "train")
    assert rej not in kept and len(kept) == 5
    assert (kept[rel]["label"], kept[rel]["label_name"]) == (1, "dog")
    assert (kept[neg]["label_name"], kept[neg]["role"], kept[neg]["imitates"]) == ("hard_negative", "hard_negative", "dog")
    rejected = parquet_rows(run_dir / "rejected" / "parquet")
    assert list(rejected) == [rej] and rejected[rej]["image"]["bytes"].startswith(b"\x89PNG")

    tree = run_dir / "imagefolder" / "train"
    assert (run_dir / "rejected" / "imagefolder" / "cat" / f"{rej}.png").is_file()
    assert not (tree / "cat" / f"{rej}.png").exists()
    assert (tree / "dog" / f"{rel}.png").is_file() and not (tree / "cat" / f"{rel}.png").exists()
    assert (tree / "hard_negative" / f"{neg}.png").is_file()
    # An emptied class folder stays: torchvision numbers the folders it finds, so removing it would
    # silently shift every later class id. It refuses the tree instead unless told allow_empty=True.
    assert (tree / "cat").is_dir() and not any((tree / "cat").iterdir())
    from torchvision.datasets import ImageFolder

    with pytest.raises(FileNotFoundError):
        ImageFolder(str(tree))
    tv = ImageFolder(str(tree), allow_empty=True)
    assert tv.classes == ["cat", "dog", "hard_negative"] and tv.class_to_idx["dog"] == rows[rel]["label_id"]
    meta = metadata(tree / "metadata.jsonl")
    assert set(meta) == set(kept)
    assert {row["file_name"] for row in meta.values()} == {str(p.relative_to(tree)) for p in tree.glob("*/*.png")}
    assert meta[rel]["label_name"] == "dog" and meta[rel]["file_name"] == f"dog/{rel}.png"
    assert list(metadata(run_dir / "rejected" / "imagefolder" / "metadata.jsonl")) == [rej]


def test_datasets_and_torchvision_still_read_the_applied_dataset(run_dir: Path, cli) -> None:
    import datasets
    from torchvision.datasets import ImageFolder

    chosen = pick(run_dir)
    decide(run_dir, (chosen["reject"]["id"], "reject", None), (chosen["relabel"]["id"], "relabel", "dog"))
    assert cli("review", run_dir, "--apply").exit_code == 0
    ds = datasets.load_dataset("parquet", data_dir=str(run_dir / "parquet"), split="train")
    assert len(ds) == 5 and ds.features["label"].names == ["cat", "dog", "hard_negative"]
    row = next(r for r in ds if r["id"] == chosen["relabel"]["id"])
    assert ds.features["label"].int2str(row["label"]) == "dog"
    tv = ImageFolder(str(run_dir / "imagefolder" / "train"), allow_empty=True)  # cat is empty now; its folder stays
    assert len(tv) == 5 and tv.classes == ds.features["label"].names


def test_applying_twice_changes_nothing_the_second_time(run_dir: Path, cli) -> None:
    chosen = pick(run_dir)
    decide(run_dir, (chosen["reject"]["id"], "reject", None), (chosen["relabel"]["id"], "relabel", "dog"))
    assert cli("review", run_dir, "--apply").exit_code == 0
    before = snapshot(run_dir)
    result = cli("review", run_dir, "--apply")
    assert result.exit_code == 0
    assert "Nothing to apply" in result.stdout
    assert snapshot(run_dir) == before
    assert len((run_dir / "review" / "applied.jsonl").read_text().splitlines()) == 1


def test_dry_run_says_what_would_change_and_changes_nothing(run_dir: Path, cli) -> None:
    chosen = pick(run_dir)
    decide(run_dir, (chosen["reject"]["id"], "reject", None))
    before = snapshot(run_dir)
    result = cli("review", run_dir, "--apply", "--dry-run", "--json")
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and report["applied"] is False and report["rejected"] == 1
    assert report["changes"] == [{"id": chosen["reject"]["id"], "kind": "rejected",
                                  "from": {"label": "cat", "role": "positive", "status": "kept"},
                                  "to": {"label": "cat", "role": "positive", "status": "rejected"}}]
    assert snapshot(run_dir) == before


def test_a_decision_undone_after_apply_is_carried_out_by_the_next_apply(run_dir: Path, cli) -> None:
    import pyarrow.parquet as pq

    original_manifest = (run_dir / "manifest.jsonl").read_bytes()
    original_meta = (run_dir / "imagefolder" / "train" / "metadata.jsonl").read_bytes()
    original_tables = {p.name: pq.read_table(p) for p in (run_dir / "parquet" / "train").glob("*.parquet")}
    chosen = pick(run_dir)
    rej, rel = chosen["reject"]["id"], chosen["relabel"]["id"]
    decide(run_dir, (rej, "reject", None), (rel, "relabel", "dog"))
    assert cli("review", run_dir, "--apply").exit_code == 0
    decide(run_dir, (rej, "clear", None), (rel, "accept", None))  # the page's undo, then a change of mind
    result = cli("review", run_dir, "--apply")
    assert re.search(r"restored +2 ", result.stdout)
    assert (run_dir / "manifest.jsonl").read_bytes() == original_manifest
    assert (run_dir / "imagefolder" / "train" / "metadata.jsonl").read_bytes() == original_meta
    assert {p.name: pq.read_table(p) for p in (run_dir / "parquet" / "train").glob("*.parquet")} == original_tables
    assert not list((run_dir / "rejected").rglob("*.png")) and not list((run_dir / "rejected").rglob("*.parquet"))


def test_generate_still_finds_the_run_finished_after_apply(run_dir: Path, cli) -> None:
    chosen = pick(run_dir)
    decide(run_dir, (chosen["reject"]["id"], "reject", None), (chosen["relabel"]["id"], "relabel", "dog"))
    assert cli("review", run_dir, "--apply").exit_code == 0
    before = snapshot(run_dir)
    result = cli("generate", "--resume", run_dir, "--json")
    summary = json.loads(result.stdout)
    # cat lost two of its images to review: the run is short now, and says so (exit 3), but is not redone
    assert result.exit_code == 3 and summary["already_finished"] is True and summary["status"] == "short"
    # (a hard negative counts for the class it imitates; the relabeled image now counts for dog)
    assert summary["classes"]["cat"]["kept"] == 1 and summary["classes"]["dog"]["kept"] == 4
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("only", ["parquet", "imagefolder"])
def test_apply_works_on_a_single_format(run_dir: Path, only: str) -> None:
    import shutil

    shutil.rmtree(run_dir / ("imagefolder" if only == "parquet" else "parquet"))
    chosen = pick(run_dir)
    rej, rel = chosen["reject"]["id"], chosen["relabel"]["id"]
    decide(run_dir, (rej, "reject", None), (rel, "relabel", "dog"))
    report = apply_decisions(load_run(run_dir), ReviewSession.open(run_dir, SelectionOptions()).log)
    assert report.counts()["rejected"] == 1 and report.counts()["relabeled"] == 1
    assert not (run_dir / ("imagefolder" if only == "parquet" else "parquet")).exists()
    if only == "parquet":
        assert report.parquet_files >= 2 and report.images_moved == 0
        assert rej not in parquet_rows(run_dir / "parquet" / "train")
    else:
        assert report.parquet_files == 0 and report.images_moved == 2
        assert (run_dir / "imagefolder" / "train" / "dog" / f"{rel}.png").is_file()
    assert manifest(run_dir)[rej]["status"] == "rejected"


def test_an_apply_cut_off_midway_converges_on_the_next_one(run_dir: Path, cli, monkeypatch) -> None:
    import dalle_data.review.apply as apply_module

    chosen = pick(run_dir)
    rej, rel = chosen["reject"]["id"], chosen["relabel"]["id"]
    decide(run_dir, (rej, "reject", None), (rel, "relabel", "dog"))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed after the Parquet files, before ImageFolder and the manifest

    with monkeypatch.context() as patch:
        patch.setattr(apply_module, "_apply_imagefolder", crash)
        with pytest.raises(KeyboardInterrupt):
            apply_decisions(load_run(run_dir), ReviewSession.open(run_dir, SelectionOptions()).log)
    assert manifest(run_dir)[rej]["status"] == "kept"  # the manifest is written last
    result = cli("review", run_dir, "--apply")
    assert result.exit_code == 0 and re.search(r"rejected +1 ", result.stdout)
    assert manifest(run_dir)[rej]["status"] == "rejected"
    assert rej not in parquet_rows(run_dir / "parquet" / "train")
    assert list(parquet_rows(run_dir / "rejected" / "parquet")) == [rej]
    assert (run_dir / "rejected" / "imagefolder" / "cat" / f"{rej}.png").is_file()
    assert "Nothing to apply" in cli("review", run_dir, "--apply").stdout


def test_apply_refuses_an_unfinished_run(run_dir: Path, cli) -> None:
    (run_dir / "_SUCCESS").unlink()
    (run_dir / "summary.json").unlink()  # a run that never ended
    result = cli("review", run_dir, "--apply")
    assert result.exit_code == 2
    assert "not a finished run" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_run_redone_with_overwrite_starts_from_its_new_records(run_dir: Path, cli) -> None:
    chosen = pick(run_dir)
    rej = chosen["reject"]["id"]
    decide(run_dir, (rej, "reject", None))
    assert cli("review", run_dir, "--apply").exit_code == 0
    # What `generate --overwrite` with the same spec leaves: the same ids, new records, OUT/review/ kept.
    rows = manifest(run_dir)
    rows[rej].update(status="kept", kept=True, reject_reason=None)
    for row in rows.values():
        row["created_at"] = "2030-01-01T00:00:00+00:00"
    (run_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    report = apply_decisions(load_run(run_dir), ReviewSession.open(run_dir, SelectionOptions()).log, dry_run=True)
    assert [(c.before.id, c.kind) for c in report.changes] == [(rej, "rejected")]  # the decision, nothing spurious
