"""examples/ci: spec in the repo -> generate -> check exit status and summary -> verify -> train, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.warm_cli import warm_path_env  # the script's `dalle-data`, forked warm

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_the_ci_workflow_example_runs_end_to_end_on_the_bundled_model(tmp_path: Path) -> None:
    env = warm_path_env({**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable,
                         "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    # as written: no argument, from a checkout without out/ (the default OUT is out/ci)
    result = subprocess.run(["bash", str(ROOT / "examples" / "ci" / "ci.sh")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "generate: complete" in result.stdout
    assert "summary: 32 kept" in result.stdout
    assert "OK" in result.stdout  # verify
    assert "epoch 1: loss" in result.stdout  # the trainer ran on the Parquet dataset
    assert (tmp_path / "out" / "ci" / "_SUCCESS").is_file()


def test_the_ci_workflow_fails_the_build_on_a_short_dataset(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text((ROOT / "examples" / "ci" / "spec.yaml").read_text().replace("max_attempts: 40", "max_attempts: 8")
                    .replace("model: shapes-demo", "model: tiny\nsteps: 2\nprior_steps: 2")
                    + "min_clip: 0.99                # no image is that close to its prompt: every class ends short\n")
    script = tmp_path / "ci.sh"
    script.write_text((ROOT / "examples" / "ci" / "ci.sh").read_text().replace(
        '"$HERE/../train_classifier.py"', f'"{ROOT}/examples/train_classifier.py"'))
    env = warm_path_env({**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable,
                         "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    result = subprocess.run(["bash", str(script), str(tmp_path / "ci")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 3 and "short" in result.stderr, result.stdout + result.stderr
    assert "epoch" not in result.stdout  # it stopped before training
