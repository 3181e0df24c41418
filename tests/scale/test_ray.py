"""--executor ray on a local Ray instance (2 CPUs): the same dataset as a local run, and an actor killed mid-run."""

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

pytestmark = pytest.mark.slow

# One torch thread everywhere: a run's image bytes depend on the thread count (float reductions), and an
# actor gets one CPU of the two; the local reference runs with one thread too.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "DALLE_DATA_RAY_CPUS": "2", "DALLE_DATA_RAY_THREADS": "1",
       "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
SPEC = [*FAST, "--classes", "zeta,alpha", "--per-class", "4", "--batch-size", "2", "--shard-size", "2",
        "--format", "parquet", "--format", "imagefolder", "--keep-rejected", "--allow-short", "--quiet"]


def generate(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dalle_data", "generate", *SPEC, "--out", str(out), *extra],
                          capture_output=True, text=True, env=ENV, timeout=600)


def dataset(out: Path) -> dict[str, tuple[str, str]]:
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    return {r["id"]: (r["status"], r["sha256"]) for r in rows}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    out = tmp_path_factory.mktemp("local") / "out"
    result = generate(out)
    assert result.returncode == 0, result.stderr
    return dataset(out)


def test_a_ray_run_is_the_local_run(local, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    result = generate(out, "--executor", "ray", "--ray-actors", "2")
    assert result.returncode == 0, result.stderr
    assert dataset(out) == local  # ids, statuses and image bytes
    assert subprocess.run([sys.executable, "-m", "dalle_data", "verify", str(out)], env=ENV,
                          capture_output=True).returncode == 0


def _actor_pids() -> list[int]:
    lines = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [int(line.split()[0]) for line in lines if "ray::Worker" in line]


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(local, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    proc = subprocess.Popen([sys.executable, "-m", "dalle_data", "generate", *SPEC, "--out", str(out), "--executor",
                             "ray", "--ray-actors", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    deadline = time.monotonic() + 300
    while not list((out / "shards").glob("r001-*.jsonl")):  # some work done, more to come
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = _actor_pids()
    assert pids, "no actor process found"
    os.kill(pids[0], signal.SIGKILL)  # Ray restarts the actor and retries its task
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert dataset(out) == local
    markers = [json.loads(x)["id"] for p in (out / "shards").glob("*.jsonl") for x in p.read_text().splitlines()]
    assert len(markers) == len(set(markers)) == len(local)


def test_without_ray_the_error_says_how_to_get_it(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "ray.py").write_text("raise ImportError('no ray here')\n")
    env = {**ENV, "PYTHONPATH": f"{blocker}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-m", "dalle_data", "generate", *SPEC, "--out", str(tmp_path / "o"),
                             "--executor", "ray"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and "pip install 'dalle-data[ray]'" in result.stderr
