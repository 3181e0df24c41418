"""Nothing lost around parts and merges (issue 21): decisions survive a merge, parts of two specs cannot
mix, a part cannot join an unsharded run, ``--overwrite`` waits for running parts, part names parse for
any n, ``verify --repair`` regenerates a sharded run's lost images, a deleted marker is noticed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dalle_data.execution.parts import Part
from dalle_data.rundir import RunDir
from dalle_data.rundir.lock import RunLock
from tests.conftest import FAST

SPEC = [*FAST, "--classes", "a,b", "--per-class", "6", "--shard-size", "2", "--filter", "none", "--batch-size", "2",
        "--format", "parquet", "--format", "imagefolder", "--quiet"]


def sharded(cli, out: Path, *extra: str, n: int = 2) -> None:
    for i in range(n):
        result = cli("generate", *SPEC, *extra, "--out", out, "--shard", f"{i}/{n}")
        assert result.exit_code == 0, result.stderr
    merged = cli("merge", out)
    assert merged.exit_code == 0, merged.stderr


def pngs(out: Path) -> dict[str, str]:
    return {p.stem: p.relative_to(out).as_posix() for p in out.rglob("*.png")}


def parquet_ids(folder: Path) -> set[str]:
    import pyarrow.parquet as pq

    return {i for p in folder.glob("part-*.parquet") for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}


def manifest(out: Path) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_merge_after_dedup_and_review_keeps_every_decision_and_every_file(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    sharded(cli, out)
    assert cli("dedup", out, "--threshold", "0.5").exit_code in (0, 3)
    before_pngs, before_manifest = pngs(out), manifest(out)
    set_aside = {i for i, row in before_manifest.items() if row["status"] == "rejected"}
    assert set_aside, "the test needs dedup to set images aside"
    before_rejected = parquet_ids(out / "rejected" / "parquet")
    assert before_rejected == set_aside
    for again in (["merge", out], ["generate", *SPEC, "--out", out]):  # the unsharded generate merges too
        cli(*again)
        assert pngs(out) == before_pngs, "a merge moved or deleted images"
        assert manifest(out) == before_manifest, "a merge undid the applied decisions in the manifest"
        assert parquet_ids(out / "rejected" / "parquet") == before_rejected
        assert parquet_ids(out / "parquet" / "train") == set(before_manifest) - set_aside
        summary = json.loads((out / "summary.json").read_text())
        assert summary["kept"] == len(before_manifest) - len(set_aside)
        assert not summary["complete"] and not (out / "_SUCCESS").exists(), "dedup made the run short"
        listed = [json.loads(x)["file_name"] for x in (out / "imagefolder/train/metadata.jsonl").read_text().splitlines()]
        assert all((out / "imagefolder/train" / name).is_file() for name in listed)
        assert cli("verify", out).exit_code == 0
    assert cli("dedup", out, "--undo").exit_code == 0
    assert cli("merge", out).exit_code == 0
    assert all(row["status"] == "kept" for row in manifest(out).values()) and (out / "_SUCCESS").is_file()
    assert cli("verify", out).exit_code == 0


def test_parts_of_two_specs_cannot_both_claim_a_new_out(tmp_path: Path) -> None:
    """The race of two parts started together: both find OUT new, then each writes its identity."""
    from dalle_data.config import build_spec, dump_spec
    from dalle_data.errors import OutputDirError

    out = tmp_path / "out"
    specs = [build_spec({"classes": ["a"], "per_class": 2, "model": "tiny", "out": str(out), "seed": seed}) for seed in (1, 2)]
    dirs = [RunDir(out, part=Part(i, 2)) for i in range(2)]
    for rundir, spec in zip(dirs, specs):
        rundir.open()
        assert rundir.check(spec.content_dict(), spec.spec_hash({})) == "new"
    try:
        first, second = specs
        dirs[0].prepare(dump_spec(first, first.spec_hash({}), "0", {}), first.spec_hash({}), first.content_dict(), {},
                        "[]")
        with pytest.raises(OutputDirError, match="holds a different run"):
            dirs[1].prepare(dump_spec(second, second.spec_hash({}), "0", {}), second.spec_hash({}),
                            second.content_dict(), {}, "[]")
        assert json.loads((out / "run.json").read_text())["spec_hash"] == first.spec_hash({})
        assert f"seed: {first.seed}" in (out / "spec.yaml").read_text()
    finally:
        for rundir in dirs:
            rundir.close()


@pytest.mark.slow
def test_a_part_cannot_join_an_unfinished_unsharded_run(tmp_path: Path, cli) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-m", "dalle_data", "generate", *SPEC, "--out", str(out)],
                            env={**os.environ, "DALLE_DATA_FAULT": "shard_marker:3"}, capture_output=True)
    assert killed.returncode < 0 and not (out / "summary.json").exists()
    joined = cli("generate", *SPEC, "--out", out, "--shard", "0/2")
    assert joined.exit_code == 2 and "unsharded run" in joined.stderr and f"--resume {out}" in joined.stderr
    assert not (out / "parts").exists()


def test_a_part_cannot_join_an_unsharded_run_that_is_running(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.setattr("dalle_data.rundir.directory.CLAIM_WAIT", 0.3)  # how long a part waits for OUT's lock
    out = tmp_path / "out"
    out.mkdir()
    with RunLock(out, "dalle-data generate (unsharded)"):  # an unsharded run holds OUT for its whole run
        joined = cli("generate", *SPEC, "--out", out, "--shard", "0/2")
    assert joined.exit_code == 75 and f"pid {os.getpid()}" in joined.stderr


@pytest.mark.parametrize("which", ["unsharded", "part"])
def test_overwrite_is_refused_while_a_part_runs(tmp_path: Path, cli, which: str) -> None:
    out = tmp_path / "out"
    assert cli("generate", *SPEC, "--out", out, "--shard", "0/2").exit_code == 0
    home = out / "parts" / "1-of-2"
    home.mkdir(parents=True)
    with RunLock(home, "dalle-data generate --shard 1/2"):  # part 1 is running (or stopped with SIGSTOP)
        args = ["--shard", "0/2"] if which == "part" else []
        refused = cli("generate", *SPEC, "--out", out, *args, "--overwrite")
        assert refused.exit_code == 75, refused.stderr
        assert f"pid {os.getpid()}" in refused.stderr and "1/2" in refused.stderr
        assert (home / ".dalle-data.lock").is_file() and (out / "parts" / "0-of-2" / "summary.json").is_file()
    assert cli("generate", *SPEC, "--out", out, "--overwrite", "--shard", "0/2").exit_code == 0


@pytest.mark.parametrize("n", [2, 9999, 10000, 100000])
def test_part_names_parse_for_any_count(n: int) -> None:
    part = Part(n - 1, n)
    assert Part.of_shard(f"{part.prefix}r001-s0000") == part
    assert Part.of_shard("r001-s0000") is None and Part.of_shard("p12of3") is None


def test_merge_finds_the_records_of_parts_of_ten_thousand(tmp_path: Path, cli) -> None:
    from dalle_data.merge import part_records
    from dalle_data.rundir import open_run

    out = tmp_path / "out"
    spec = [*FAST, "--classes", "a", "--per-class", "1", "--filter", "none", "--batch-size", "2", "--quiet"]
    assert cli("generate", *spec, "--out", out, "--shard", "0/10000").exit_code == 0
    records = part_records(open_run(out), 10000)
    assert len(records) == 1 and all(r.shard.startswith("p0000of10000-") for r in records)


@pytest.mark.slow
def test_verify_repair_regenerates_the_lost_images_of_a_sharded_run(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    sharded(cli, out)
    before = {p: p.read_bytes() for p in out.rglob("*.png")}
    lost = [r for r in manifest(out) if r]
    victim = manifest(out)[lost[-1]]["shard"]
    (out / "parquet" / "train" / f"part-{victim}.parquet").unlink()
    for png in out.rglob("*.png"):
        if manifest(out)[png.stem]["shard"] == victim:
            png.unlink()
    assert cli("verify", out).exit_code == 4
    repaired = cli("verify", out, "--repair")
    assert repaired.exit_code == 0, repaired.stderr
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == before
    assert cli("verify", out).exit_code == 0


@pytest.mark.slow
def test_a_deleted_shard_marker_is_found_and_repaired(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    sharded(cli, out)
    rows = manifest(out)
    marker = sorted((out / "shards").glob("p0000of0002-*.jsonl"))[0]
    marker.unlink()
    for command in (["verify", out], ["merge", out]):
        found = cli(*command)
        assert found.exit_code != 0 and marker.stem in found.stderr + found.stdout, found.stdout
    assert cli("verify", out, "--repair").exit_code == 0
    assert marker.is_file() and manifest(out) == rows and parquet_ids(out / "parquet" / "train") == set(rows)
    assert cli("merge", out).exit_code == 0 and cli("verify", out).exit_code == 0


@pytest.mark.slow
def test_a_part_whose_marker_was_deleted_before_the_merge_redoes_that_shard(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    for i in range(2):
        assert cli("generate", *SPEC, "--out", out, "--shard", f"{i}/2").exit_code == 0
    marker = sorted((out / "shards").glob("p0001of0002-*.jsonl"))[0]
    def rows() -> list[dict]:  # all but created_at: the shard is made again now, the same
        return [{k: v for k, v in json.loads(x).items() if k != "created_at"} for x in marker.read_text().splitlines()]

    made = rows()
    marker.unlink()
    refused = cli("merge", out)
    assert refused.exit_code == 2 and "--shard 1/2" in refused.stderr
    assert cli("generate", *SPEC, "--out", out, "--shard", "1/2").exit_code == 0
    assert rows() == made, "the part redid the shard as the first time"
    assert cli("merge", out).exit_code == 0 and cli("verify", out).exit_code == 0
    assert len(manifest(out)) == 12 and parquet_ids(out / "parquet" / "train") == set(manifest(out))
