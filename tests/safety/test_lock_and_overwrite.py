"""Nothing clobbered: one process per run directory, and --overwrite deletes only what runs wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST
from tests.resume.helpers import SPEC, popen_cli, run_cli


def _wait(predicate, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_process_on_the_same_out_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = popen_cli(out, warm=False)  # the lock names this pid
    try:
        _wait(lambda: (out / ".dalle-data.lock").is_file() and str(first.pid) in (out / ".dalle-data.lock").read_text(),
              first)
        start = time.perf_counter()
        other = subprocess.run([sys.executable, "-m", "dalle_data", "generate", *FAST, "--classes", "zebra",
                                "--per-class", "1", "--out", str(out)], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert time.perf_counter() - start < 30  # at once: no model is loaded first
        assert other.returncode == 75
        lines = other.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "generate" in lines[0], other.stderr
        review = subprocess.run([sys.executable, "-m", "dalle_data", "review", str(out), "--apply"],
                                capture_output=True, text=True, timeout=60)
        assert review.returncode != 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel dropped the lock with the process: the run resumes
    resumed = run_cli(out)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text())["spec_hash"]


def test_the_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    from dalle_data.rundir import RunLock, RunLocked

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, '.'); from dalle_data.rundir import RunLock; "
        f"RunLock(__import__('pathlib').Path({str(out)!r}), 'holder').acquire(); print('held', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(out):
        pass


def _user_files(out: Path) -> dict[str, bytes]:
    files = {
        "parquet/validation/real_val.parquet": b"a user's validation split",
        "imagefolder/test/cat/photo.png": b"a user's test photo",
        "imagefolder/train/cat/photo.png": b"a user's photo among the generated ones",
        "notes.md": b"my notes about this run",
    }
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return files


def test_overwrite_deletes_only_what_runs_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli(out).returncode == 0
    mine = _user_files(out)
    result = subprocess.run([sys.executable, "-m", "dalle_data", "generate", *SPEC, "--seed", "9", "--out", str(out),
                             "--overwrite"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for name, data in mine.items():
        assert (out / name).read_bytes() == data, f"{name} was touched"
    spec = (out / "spec.yaml").read_text()
    assert "seed: 9" in spec
    ids = {json.loads(line)["id"] for line in (out / "manifest.jsonl").read_text().splitlines()}
    pngs = {p.stem for p in out.glob("imagefolder/train/*/*.png")} - {"photo"}
    assert pngs <= ids, "every generated image left is the new run's"


def test_overwrite_refuses_a_directory_that_was_never_a_run(tmp_path: Path, cli) -> None:
    out = tmp_path / "project"
    out.mkdir()
    (out / "spec.yaml").write_text("apiVersion: v1\nkind: Pod\n")  # somebody else's spec.yaml
    (out / "parquet").mkdir()
    (out / "parquet" / "data.parquet").write_bytes(b"precious")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    result = cli("generate", *FAST, "--classes", "cat", "--per-class", "1", "--out", out, "--overwrite")
    assert result.exit_code == 2 and "holds no dalle-data run" in result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before


def test_a_kill_while_the_first_files_were_written_leaves_a_runnable_directory(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".tmp-spec.yaml.4242.part").write_text("classes: [ca")  # killed mid-write of the very first file
    result = cli("generate", *FAST, "--classes", "cat", "--per-class", "1", "--filter", "none", "--out", out,
                 "--quiet")
    assert result.exit_code == 0, result.stderr
    assert not list(out.rglob(".tmp-*")) and (out / "_SUCCESS").is_file()
