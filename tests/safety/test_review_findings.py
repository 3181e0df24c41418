"""Second-review findings, each reproduced first: overwrite across splits and formats, legacy resumes,
regeneration that no longer matches, a moved run's cut-off apply, probe reading only the run's files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path


from tests.conftest import FAST

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy-run"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def cli_run(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    from tests.warm_cli import dalle_data_command  # a process of its own, forked warm

    command, full_env = dalle_data_command({**ENV, **(env or {})})
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=full_env)


def test_overwrite_with_another_split_removes_the_old_splits_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = [*FAST, "--classes", "cat,dog", "--per-class", "2", "--filter", "none", "--format", "parquet",
            "--format", "imagefolder", "--out", out, "--quiet"]
    assert cli_run("generate", *base).returncode == 0
    spec = tmp_path / "val.yaml"
    spec.write_text("split: validation\n")
    assert cli_run("generate", *base, "--config", spec, "--overwrite").returncode == 0
    assert not (out / "parquet" / "train").exists() and not (out / "imagefolder" / "train").exists()
    assert sorted(p.parent.name for p in out.glob("parquet/*/*.parquet")) == ["validation"]


def test_overwrite_of_a_parquet_only_run_leaves_a_users_imagefolder_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = [*FAST, "--classes", "cat", "--per-class", "1", "--filter", "none", "--format", "parquet", "--out", out,
            "--quiet"]
    assert cli_run("generate", *base).returncode == 0
    mine = {out / "imagefolder" / "README.md": b"my card", out / "imagefolder" / "train" / "metadata.jsonl": b"{}\n"}
    for path, data in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert cli_run("generate", *base, "--seed", "5", "--overwrite").returncode == 0
    assert all(path.read_bytes() == data for path, data in mine.items())


def test_resuming_an_unfinished_run_made_before_labels_json_renumbers_its_finished_parts(tmp_path: Path) -> None:
    from dalle_data.writers.parquet import class_names_of

    out = tmp_path / "legacy"
    shutil.copytree(LEGACY, out)
    for name in ("summary.json", "_SUCCESS", "shards/r001-s0001.jsonl"):
        (out / name).unlink()  # unfinished: one shard to redo, one finished in the old numbering
    result = cli_run("generate", "--resume", out)
    assert result.returncode == 0, result.stderr
    assert {class_names_of(p) for p in out.glob("parquet/train/*.parquet")} == {("alpha", "zeta")}
    assert cli_run("verify", out).returncode == 0


def test_repair_refuses_to_regenerate_from_changed_inputs(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    prompts = tmp_path / "p.jsonl"
    assert cli_run("prompts", "--classes", "cat", "-n", "4", "-o", prompts).returncode == 0
    out = tmp_path / "out"
    made = cli_run("generate", *FAST, "--prompts", prompts, "--per-class", "4", "--filter", "none", "--shard-size",
                   "2", "--format", "parquet", "--out", out, "--quiet")
    assert made.returncode == 0, made.stderr
    lost = sorted(out.glob("parquet/train/*.parquet"))[-1]
    lost.unlink()
    prompts.write_text(prompts.read_text().replace('"prompt": "', '"prompt": "In the rain: '))
    result = cli_run("verify", out, "--repair")
    assert result.returncode == 2 and "other inputs" in result.stderr, result.stdout + result.stderr
    for part in out.glob("parquet/train/*.parquet"):
        assert all(row["image"]["bytes"] for row in pq.read_table(part).to_pylist())


def test_a_moved_run_finishes_its_cut_off_apply(tmp_path: Path, cli) -> None:
    from tests.review.test_apply import decide, pick
    from tests.review.test_apply_kill import state

    out = tmp_path / "run"
    assert cli_run("generate", *FAST, "--classes", "cat,dog", "--per-class", "3", "--mode", "vanilla=2,adversarial=1",
                   "--filter", "none", "--shard-size", "2", "--format", "parquet", "--format", "imagefolder",
                   "--out", out, "--quiet").returncode == 0
    chosen = pick(out)
    decide(out, (chosen["reject"]["id"], "reject", None))
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    assert cli_run("review", reference, "--apply").returncode == 0
    killed = cli_run("review", out, "--apply", env={"DALLE_DATA_FAULT": "apply_staged:1"})
    assert killed.returncode == -signal.SIGKILL
    moved = tmp_path / "moved"
    out.rename(moved)
    listing = cli_run("review", ".", "--format", "json", cwd=moved)  # opened from elsewhere, under another name
    assert listing.returncode == 0, listing.stderr
    assert state(moved) == state(reference)


def test_probe_reads_only_the_runs_own_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli_run("generate", *FAST, "--classes", "cat,dog", "--per-class", "2", "--filter", "none",
                   "--format", "parquet", "--out", out, "--quiet").returncode == 0
    (out / "parquet" / "validation").mkdir()
    (out / "parquet" / "validation" / "real_val.parquet").write_bytes(b"a user's own file")
    from PIL import Image

    test = tmp_path / "test"
    for cls, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        (test / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), colour).save(test / cls / f"{i}.png")
    result = cli_run("probe", "--train", out, "--test", test, "--scorer", "tiny", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"]["synthetic"]["train_images"] == 4


def test_review_apply_waits_for_no_one_while_generate_holds_the_run(tmp_path: Path) -> None:
    from dalle_data.rundir import RunLock

    out = tmp_path / "out"
    assert cli_run("generate", *FAST, "--classes", "cat", "--per-class", "1", "--filter", "none", "--out", out,
                   "--quiet").returncode == 0
    with RunLock(out, "dalle-data generate (a test holding the lock)"):
        result = cli_run("review", out, "--apply")
        repair = cli_run("verify", out, "--repair")
    assert result.returncode == 75 and f"pid {os.getpid()}" in result.stderr, result.stderr
    assert repair.returncode == 75


def test_verify_repair_writes_nothing_into_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("mine")
    result = cli_run("verify", folder, "--repair")
    assert result.returncode == 2 and "holds no dalle-data run" in result.stderr
    assert [p.name for p in folder.iterdir()] == ["a.txt"]


def test_a_split_name_datasets_cannot_use_is_refused_in_one_line(tmp_path: Path, cli) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("classes: [cat]\nper_class: 1\nsplit: my-split\nmodel: tiny\n")
    result = cli("generate", "--config", spec, "--out", tmp_path / "o")
    assert result.exit_code == 2 and "split" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_review_that_leaves_a_class_under_quota_makes_the_run_short(tmp_path: Path) -> None:
    from tests.review.test_apply import decide, pick

    out = tmp_path / "out"
    assert cli_run("generate", *FAST, "--classes", "cat,dog", "--per-class", "3", "--mode", "vanilla=2,adversarial=1",
                   "--filter", "none", "--format", "parquet", "--out", out, "--quiet").returncode == 0
    assert (out / "_SUCCESS").is_file()
    decide(out, (pick(out)["reject"]["id"], "reject", None))
    assert cli_run("review", out, "--apply").returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "short" and summary["review_applied"] is True and not (out / "_SUCCESS").exists()
    assert summary["classes"]["cat"]["kept"] == 2 and summary["classes"]["cat"]["met"] is False
    again = cli_run("generate", "--resume", out, "--json")
    assert again.returncode == 3 and json.loads(again.stdout)["already_finished"] is True
