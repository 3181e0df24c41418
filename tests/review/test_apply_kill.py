"""`review --apply` killed (SIGKILL) at every write: after recovery each image is in exactly one place."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.review.conftest import manifest
from tests.review.test_apply import decide, pick

pytestmark = pytest.mark.slow

POINTS = ["apply_journal:1", "apply_stage:1", "apply_stage:2", "apply_staged:1", "apply_parquet:1",
          "apply_parquet:2", "apply_move:1", "apply_move:2", "apply_manifest:1"]


def apply_cli(out: Path, fault: str | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DALLE_DATA_FAULT", None)
    if fault:
        env["DALLE_DATA_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "dalle_data", "review", str(out), *extra], env=env,
                          capture_output=True, text=True, timeout=120)


def state(out: Path) -> dict[str, object]:
    """Where every image is, with its bytes and label, across both formats; asserts nothing is doubled."""
    import pyarrow.parquet as pq

    places: dict[str, list[str]] = {}
    data: dict[str, object] = {}
    for where, folder in (("train", out / "parquet" / "train"), ("rejected", out / "rejected" / "parquet")):
        for part in sorted(folder.glob("part-*.parquet")):
            for row in pq.read_table(part).to_pylist():
                places.setdefault(f"parquet:{row['id']}", []).append(where)
                data[f"parquet:{row['id']}"] = (where, row["label_name"], row["label"], row["image"]["bytes"])
    for png in sorted(out.glob("imagefolder/train/*/*.png")) + sorted(out.glob("rejected/imagefolder/*/*.png")):
        key = f"png:{png.stem}"
        places.setdefault(key, []).append(png.relative_to(out).as_posix())
        data[key] = (png.relative_to(out).as_posix(), png.read_bytes())
    doubled = {k: v for k, v in places.items() if len(v) > 1}
    assert not doubled, f"images in more than one place: {doubled}"
    assert not list(out.rglob("*.staged")) and not list(out.rglob(".tmp-*"))
    assert not (out / "review" / "apply-journal.json").exists()
    meta = sorted(json.loads(x)["file_name"] for x in (out / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines())
    return {"data": data, "metadata": meta,
            "manifest": {i: (r["status"], r["label"]) for i, r in manifest(out).items()}}


@pytest.fixture(scope="module")
def scenarios(base_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """For each scenario: a run with decisions in force (not applied yet) and the state a clean apply leaves."""
    out: dict[str, tuple[Path, dict]] = {}
    first = tmp_path_factory.mktemp("apply-kill") / "changes"
    shutil.copytree(base_run, first)
    chosen = pick(first)
    decide(first, (chosen["reject"]["id"], "reject", None), (chosen["relabel"]["id"], "relabel", "dog"),
           (chosen["negative"]["id"], "hard_negative", None))
    restore = tmp_path_factory.mktemp("apply-kill") / "restore"
    shutil.copytree(first, restore)
    assert apply_cli(restore, None, "--apply").returncode == 0
    decide(restore, (chosen["reject"]["id"], "clear", None), (chosen["negative"]["id"], "clear", None))
    for name, run in (("changes", first), ("restore", restore)):
        reference = run.parent / f"{name}-reference"
        shutil.copytree(run, reference)
        assert apply_cli(reference, None, "--apply").returncode == 0
        out[name] = (run, state(reference))
    return out


@pytest.mark.parametrize("scenario", ["changes", "restore"])
@pytest.mark.parametrize("fault", POINTS)
def test_kill_during_apply_then_recovery_leaves_every_image_in_one_place(
    scenario: str, fault: str, scenarios, tmp_path: Path
) -> None:
    template, reference = scenarios[scenario]
    out = tmp_path / "out"
    shutil.copytree(template, out)
    killed = apply_cli(out, fault, "--apply")
    assert killed.returncode == -signal.SIGKILL, f"{fault} is not reached in the {scenario} scenario: {killed.stderr}"
    # Any command that opens the run finishes (or undoes) the cut-off apply first.
    listing = apply_cli(out, None, "--format", "json")
    assert listing.returncode == 0, listing.stderr
    journal_gone = not (out / "review" / "apply-journal.json").exists()
    assert journal_gone
    again = apply_cli(out, None, "--apply")
    assert again.returncode == 0, again.stderr
    assert state(out) == reference
