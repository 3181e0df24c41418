"""--out / --from on an S3-compatible server (moto, started by the test on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST

pytestmark = pytest.mark.slow

SPEC = [*FAST, "--classes", "zeta,alpha", "--per-class", "3", "--batch-size", "2", "--shard-size", "2",
        "--filter", "none", "--format", "parquet", "--format", "imagefolder", "--quiet"]
VOLATILE = {"runlog.jsonl", "summary.json", "run.json", "spec.yaml", ".dalle-data.lock"}  # times, ids, paths


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "DALLE_DATA_HOME": str(tmp_path_factory.mktemp("home"))}
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}, key="test", secret="test")
    fs.mkdir("bucket")
    yield fs, env
    server.terminate()
    server.wait(timeout=30)


def cli(env: dict[str, str], *args: object, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    from tests.warm_cli import dalle_data_command  # a process of its own, forked warm

    command, full_env = dalle_data_command({**env, **(extra_env or {})})
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=600)


def normal(name: str, data: bytes) -> object:
    """A file's content without what differs between two runs of one spec (record times; the card's
    fingerprint of them)."""
    import io

    import pyarrow.parquet as pq

    if name.endswith(".parquet"):
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
        return sorted((r["id"], r["label"], r["image"]["bytes"]) for r in rows)
    if name.endswith(".jsonl"):
        rows = [json.loads(x) for x in data.decode().splitlines()]
        return sorted(json.dumps({k: v for k, v in r.items() if k != "created_at"}, sort_keys=True) for r in rows)
    if name.endswith("README.md"):
        return "card"
    return data


def remote_files(fs, prefix: str) -> dict[str, object]:
    fs.invalidate_cache()
    return {(name := p[len(prefix) + 1:]): normal(name, fs.cat_file(p)) for p in fs.find(prefix)
            if p.rsplit("/", 1)[-1] not in VOLATILE}


def local_files(root: Path) -> dict[str, object]:
    return {(name := p.relative_to(root).as_posix()): normal(name, p.read_bytes()) for p in root.rglob("*")
            if p.is_file() and p.name not in VOLATILE and not p.name.endswith(".intent.json")}


@pytest.fixture(scope="module")
def reference(s3, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    _, env = s3
    out = tmp_path_factory.mktemp("local") / "out"
    result = cli(env, "generate", *SPEC, "--out", out)
    assert result.returncode == 0, result.stderr
    return local_files(out)


def test_a_run_on_s3_has_the_files_of_a_local_run(s3, reference) -> None:
    fs, env = s3
    result = cli(env, "generate", *SPEC, "--out", "s3://bucket/plain")
    assert result.returncode == 0, result.stderr
    assert remote_files(fs, "bucket/plain") == reference
    assert cli(env, "verify", "s3://bucket/plain").returncode == 0
    again = cli(env, "generate", *SPEC, "--out", "s3://bucket/plain", "--json")  # found finished, from anywhere
    assert again.returncode == 0 and json.loads(again.stdout)["already_complete"] is True


def test_a_kill_then_a_rerun_on_another_machine_completes_the_run(s3, reference, tmp_path: Path) -> None:
    fs, env = s3
    # killed once its second shard is on S3 (a kill at a local marker races the upload of the shard before it:
    # shards are committed by a small pool)
    killed = cli(env, "generate", *SPEC, "--out", "s3://bucket/killed", extra_env={"DALLE_DATA_FAULT": "shard_published:2"})
    assert killed.returncode == -signal.SIGKILL
    fs.invalidate_cache()
    assert fs.exists("bucket/killed/spec.yaml") and not fs.exists("bucket/killed/_SUCCESS")
    elsewhere = {"DALLE_DATA_HOME": str(tmp_path / "another-machine")}  # an empty mirror: everything from S3
    resumed = cli(env, "generate", "--resume", "s3://bucket/killed", "--json", extra_env=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["shards_resumed"] >= 1
    assert remote_files(fs, "bucket/killed") == reference


def test_parts_on_two_machines_write_one_run_and_merge(s3, reference, tmp_path: Path) -> None:
    fs, env = s3
    for i in range(2):
        machine = {"DALLE_DATA_HOME": str(tmp_path / f"machine{i}")}
        result = cli(env, "generate", *SPEC, "--out", "s3://bucket/parts", "--shard", f"{i}/2", extra_env=machine)
        assert result.returncode == 0, result.stderr
    merged = cli(env, "merge", "s3://bucket/parts", "--json", extra_env={"DALLE_DATA_HOME": str(tmp_path / "m")})
    assert merged.returncode == 0, merged.stderr
    summary = json.loads(merged.stdout)
    fs.invalidate_cache()
    assert summary["parts"] == 2 and summary["kept"] == 6 and fs.exists("bucket/parts/_SUCCESS")
    assert fs.cat_file("bucket/parts/embeddings/text/vocabulary.npz") == reference["embeddings/text/vocabulary.npz"]
    ids = sorted(json.loads(x)["id"] for x in fs.cat_file("bucket/parts/manifest.jsonl").decode().splitlines())
    assert ids == sorted(json.loads(row)["id"] for row in reference["manifest.jsonl"])


def test_sources_from_s3(s3, tmp_path: Path) -> None:
    fs, env = s3
    from PIL import Image

    for cls in ("cat", "dog"):
        for i in range(2):
            path = tmp_path / f"{cls}{i}.png"
            Image.new("RGB", (40, 40), (50 * i, 100, 200 if cls == "cat" else 20)).save(path)
            fs.put_file(str(path), f"bucket/photos/{cls}/{i}.png")
    out = tmp_path / "out"
    result = cli(env, "generate", *FAST, "--mode", "variation", "--from", "s3://bucket/photos", "--per-source", "1",
                 "--filter", "none", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kept"] == 4
    spec = (out / "spec.yaml").read_text()
    assert "from_dir: s3://bucket/photos" in spec  # the URL, not a machine's cache path, is the run's input
