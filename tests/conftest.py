"""Shared fixtures: tiny models built offline, a CLI runner, fast generation flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network: any hub lookup must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The batch-size probe's memory (and the LLM cache) go to a folder of the test session, not ~/.cache.
if "DALLE_DATA_HOME" not in os.environ:
    import tempfile

    os.environ["DALLE_DATA_HOME"] = tempfile.mkdtemp(prefix="dalle-data-test-home-")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Few denoising steps: the code path is the same, the images are cheaper.
FAST = ["--model", "tiny", "--steps", "2", "--prior-steps", "2"]


@pytest.fixture(scope="session")
def tiny_generator():
    from dalle_data.generators import load_generator

    return load_generator("tiny")


@pytest.fixture(scope="session")
def tiny_scorer():
    from dalle_data.scoring import load_scorer

    return load_scorer("tiny")


@pytest.fixture()
def cli(tmp_path: Path):
    """Run ``dalle-data ARGS`` in-process; returns the result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from dalle_data.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


def generate_run(tmp_path_factory: pytest.TempPathFactory, name: str, *args: str) -> Path:
    """A run made in-process with ``dalle-data generate ARGS --out <tmp>/out --quiet``; asserts it exited 0."""
    from typer.testing import CliRunner

    from dalle_data.cli import app

    out = tmp_path_factory.mktemp(name) / "out"
    result = CliRunner().invoke(app, ["generate", *FAST, *args, "--out", str(out), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


def copy_run(base: Path, tmp_path: Path) -> Path:
    """A private copy of a run, for a test that changes it."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(base, out)
    return out
