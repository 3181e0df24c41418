"""The Slurm array and Kubernetes indexed Job examples: each part as the scheduler would start it, then merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SPEC = """classes: [cat, dog]
per_class: 4
model: tiny
steps: 2
prior_steps: 2
filter: none
formats: [parquet, imagefolder]
"""


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    from tests.warm_cli import warm_path_env  # the scripts' `dalle-data`, forked warm

    return warm_path_env({**os.environ, "HF_HUB_OFFLINE": "1", **extra,
                          "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})


def test_the_slurm_array_script_runs_every_part_and_the_merge(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    out = tmp_path / "run"
    script = (ROOT / "examples" / "slurm" / "generate.sbatch").read_text()
    array = next(line for line in script.splitlines() if line.startswith("#SBATCH --array="))
    first, last = map(int, array.split("=")[1].split("-"))
    count = last - first + 1
    tasks = [subprocess.Popen(["bash", str(ROOT / "examples" / "slurm" / "generate.sbatch")], cwd=tmp_path,
                              env=env(tmp_path, SPEC=str(tmp_path / "spec.yaml"), OUT=str(out),
                                      SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT=str(count)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for task in range(first, last + 1)]  # side by side, as an array runs them
    for task in tasks:
        _, stderr = task.communicate(timeout=600)
        assert task.returncode == 0, stderr
    merged = subprocess.run(["bash", str(ROOT / "examples" / "slurm" / "merge.sbatch")], cwd=tmp_path,
                            env=env(tmp_path, OUT=str(out)), capture_output=True, text=True, timeout=600)
    assert merged.returncode == 0, merged.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == count and summary["kept"] == 8 and (out / "_SUCCESS").is_file()
    submit = (ROOT / "examples" / "slurm" / "submit.sh").read_text()
    assert "--dependency=\"afterok:${array}\"" in submit  # the merge waits for every part


def test_the_kubernetes_indexed_job_runs_every_part_and_the_merge(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC)
    out = tmp_path / "run"
    job = yaml.safe_load((ROOT / "examples" / "kubernetes" / "dalle-data-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    pod = job["spec"]["template"]["spec"]["containers"][0]
    command = pod["args"][0].replace("/spec/spec.yaml", str(tmp_path / "spec.yaml"))
    pods = [subprocess.Popen(["sh", "-c", command], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env(tmp_path, OUT=str(out), JOB_COMPLETION_INDEX=str(index)))
            for index in range(job["spec"]["completions"])]  # all at once, as parallelism allows
    for pod_process in pods:
        _, stderr = pod_process.communicate(timeout=600)
        assert pod_process.returncode == 0, stderr
    merge = yaml.safe_load((ROOT / "examples" / "kubernetes" / "dalle-data-merge.yaml").read_text())
    merge_command = merge["spec"]["template"]["spec"]["containers"][0]["args"][0]
    result = subprocess.run(["sh", "-c", merge_command], cwd=tmp_path, env=env(tmp_path, OUT=str(out)),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "summary.json").read_text())["parts"] == job["spec"]["completions"]
