"""Kill `dalle-data generate` anywhere, rerun, get exactly the uninterrupted dataset."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.resume.helpers import leftovers, popen_cli, run_cli, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("ref") / "out"
    result = run_cli(out, warm=False)  # cold: its own hash seed, unlike the warm runs compared with it
    assert result.returncode == 0, result.stderr
    snap = snapshot(out)
    assert snap["counts"]["rounds"] >= 2 and snap["counts"]["shards"] >= 4, snap["counts"]
    assert snap["rejected"], "the run should reject some images, so rounds and rejected data are exercised"
    return snap


@pytest.mark.parametrize("fault", ["generate:5", "shard_files:2", "shard_marker:3"])
def test_sigkill_then_rerun_gives_the_uninterrupted_dataset(fault: str, tmp_path: Path, reference) -> None:
    out = tmp_path / "out"
    killed = run_cli(out, env={"DALLE_DATA_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    assert not (out / "_SUCCESS").exists()
    if fault.startswith("shard_files"):
        assert leftovers(out) or list(out.glob("parquet/train/*.parquet")), "killed mid-shard-write"
    resumed = run_cli(out)
    assert resumed.returncode == 0, resumed.stderr
    assert snapshot(out) == reference
    assert leftovers(out) == []
    log = [json.loads(line) for line in (out / "runlog.jsonl").read_text().splitlines()]
    assert [e["event"] for e in log] == ["start", "start", "end"]  # the killed run never logged its end
    complete = json.loads((out / "summary.json").read_text())["complete"]
    assert log[1]["resumed"] is True and log[2]["status"] == ("complete" if complete else "finished short")
    assert log[0]["versions"]["dalle-data"] and log[0]["versions"]["torch"] and log[0]["model"] == "tiny"


def _wait_for_marker(out: Path, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list((out / "shards").glob("*.jsonl")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_says_how_to_resume(sig: signal.Signals, tmp_path: Path, reference) -> None:
    out = tmp_path / "out"
    proc = popen_cli(out)
    _wait_for_marker(out, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "stopping after the current batch" in stderr
    assert f"--resume {out}" in stderr and stderr.count("error:") == 1
    assert leftovers(out) == [] and not (out / "_SUCCESS").exists()
    assert run_cli(out).returncode == 0
    assert snapshot(out) == reference


def test_second_ctrl_c_stops_at_once_without_corrupt_files(tmp_path: Path, reference) -> None:
    out = tmp_path / "out"
    proc = popen_cli(out)
    _wait_for_marker(out, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)  # let the first handler run (a loaded machine can be slow to get there)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=180)
    # 130 when the second Ctrl-C lands inside the command, -SIGINT when it lands as the process is already
    # leaving (the interpreter then dies of the signal, as shells expect): both stop at once.
    assert proc.returncode in (130, -signal.SIGINT), stderr
    resumed = run_cli(out, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert snapshot(out) == reference
    assert leftovers(out) == []


def test_rerunning_a_finished_run_does_nothing_and_resume_flag_works(tmp_path: Path, reference) -> None:
    out = tmp_path / "out"
    assert run_cli(out, env={"DALLE_DATA_FAULT": "shard_marker:2"}).returncode == -signal.SIGKILL
    import subprocess

    from tests.warm_cli import dalle_data_command

    command, env = dalle_data_command({**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    resumed = subprocess.run([*command, "generate", "--resume", str(out), "--json"],
                             capture_output=True, text=True, timeout=300, env=env)
    summary = json.loads(resumed.stdout)
    assert resumed.returncode == (0 if summary["complete"] else 3), resumed.stderr  # 3: a quota unmet (exit code)
    assert summary["shards_resumed"] >= 1
    assert snapshot(out) == reference
    again = json.loads(run_cli(out, "--json").stdout)
    assert again["already_finished"] is True and again["already_complete"] is again["complete"]
