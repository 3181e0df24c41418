"""``dalle-data loop``: rounds of train, evaluate, focus, generate; resumable; bad input in one line.

The world: two shapes-world classes, 8 biased real images per class (each class on one background), a
validation and a test set with every class on every background; a budget of 8 images in two rounds, the
CNN learner cut short (``DALLE_DATA_CNN_MIN_STEPS``). One uninterrupted loop (with the uniform arm) is made
once for the module; the kill test makes the same loop killed twice and compares.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dalle_data.cli import app

CLASSES = "red circle,blue star"
ENV = {"HF_HUB_OFFLINE": "1", "DALLE_DATA_CNN_MIN_STEPS": "40", "OMP_NUM_THREADS": "1"}


def loop_args(world: Path, out: Path, *extra: str) -> list[str]:
    return ["loop", "--real-train", str(world / "few"), "--val", str(world / "val"), "--test", str(world / "test"),
            "--config", str(world / "spec.yaml"), "--classes", CLASSES, "--budget", "8", "--rounds", "2", "--epochs", "3",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dalle_data.demo.world import write_held_out

    root = tmp_path_factory.mktemp("loop-world")
    # A fixed batch: an image's bytes depend on the batch it was made in (auto may probe another on resume).
    (root / "spec.yaml").write_text("model: shapes-demo\nbatch_size: 2\n")
    classes = tuple(CLASSES.split(","))
    write_held_out(root / "few", per_class=8, seed=3, classes=classes, kind="biased-train")
    write_held_out(root / "val", per_class=16, seed=4, classes=classes, kind="balanced-test")
    write_held_out(root / "test", per_class=40, seed=2, classes=classes, kind="balanced-test")
    return root


def run_in_process(args: list[str]) -> tuple[int, str]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses run (OMP_NUM_THREADS=1): the same sums, the same figures
    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        torch.set_num_threads(threads)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def finished(world: Path) -> Path:
    out = world / "loop-out"
    code, output = run_in_process(loop_args(world, out, "--compare", "uniform", "--json"))
    assert code == 0, output
    return out


def figures(out: Path) -> dict:
    return json.loads((out / "loop.json").read_text())["arms"]


def round_records(out: Path) -> dict[str, list[tuple[str, str, str]]]:
    from dalle_data.rundir import open_run

    rounds = {}
    for run in sorted(out.glob("*/round-*")):
        rounds[f"{run.parent.name}/{run.name}"] = sorted((r.id, r.status, r.sha256 or "") for r in open_run(run).records())
    return rounds


def test_a_loop_records_every_round_of_both_arms_and_plots_them(finished: Path) -> None:
    arms = figures(finished)
    assert set(arms) == {"focused", "uniform"}
    for arm, steps in arms.items():
        assert [s["round"] for s in steps] == [0, 1, 2]
        assert [s["synthetic_images"] for s in steps][0] == 0
        assert all(0 <= s["top1"] <= 1 for s in steps)
        assert all(s["worst_group"] is not None for s in steps), "the test set's groups give a worst group"
        assert steps[-1]["synthetic_images"] <= 8 and steps[-1]["synthetic_images"] > steps[1]["synthetic_images"]
    assert arms["uniform"][0] == arms["focused"][0], "step 0 (real images only) is one learner"
    # The focus of each round came from the learner before it, and is in that round's spec (hashed).
    from dalle_data.rundir import open_run

    for r in (1, 2):
        assert (finished / "focused" / f"focus-{r}.yaml").is_file()
        assert open_run(finished / "focused" / f"round-{r}").spec.focus is not None
        assert open_run(finished / "uniform" / f"round-{r}").spec.focus is None
    page = (finished / "report.html").read_text()
    assert page.count("<polyline") == 4, "top-1 and worst group, for each arm"
    assert "uniform after round 2" in page


def test_the_same_command_again_finds_it_finished(world: Path, finished: Path) -> None:
    before = (finished / "loop.json").read_bytes()
    code, output = run_in_process(loop_args(world, finished, "--compare", "uniform"))
    assert code == 0, output
    assert "focused" in output and "uniform" in output
    assert (finished / "loop.json").read_bytes() == before


def test_killed_during_a_round_and_between_rounds_it_resumes_to_the_same_figures_and_images(
        world: Path, finished: Path, tmp_path: Path) -> None:
    from tests.warm_cli import dalle_data_command  # each a process of its own, forked warm

    out = tmp_path / "killed"
    command, env = dalle_data_command({**os.environ, **ENV})
    cmd = [*command, *loop_args(world, out, "--compare", "uniform", "--quiet")]
    # 1: after step 0's training and the focus it wrote, before its figures are recorded; 2: in round 1's
    # images; 3: the fourth training of that process (focused rounds 1 and 2, uniform 1 and 2): after the
    # uniform arm's last, unrecorded.
    for fault in ("loop_trained:1", "generate:2", "loop_trained:4"):
        killed = subprocess.run(cmd, env={**env, "DALLE_DATA_FAULT": fault}, capture_output=True, text=True,
                                timeout=600)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert figures(out) == figures(finished)
    assert round_records(out) == round_records(finished)


@pytest.mark.parametrize("extra, message", [
    (["--rounds", "0"], "--rounds 0: give from 1 to"),
    (["--budget", "3"], "--budget 3: 2 round(s) of 2 classes need at least 4 images"),
    (["--learner", "svm"], "--learner svm: choose one of"),
    (["--compare", "focused"], "--compare focused: the only comparison is 'uniform'"),
    (["--groups", "nowhere.jsonl"], "--groups nowhere.jsonl: no such file"),
    (["--select", "closest"], "--select closest: the only selection is 'uncertain'"),
    (["--candidates", "3"], "--candidates shapes --select: add --select uncertain"),
    (["--select", "uncertain", "--learner", "linear"], "--select uncertain asks the loop's learner"),
    (["--select", "uncertain", "--candidates", "1"], "--candidates 1: give from 2 to 64"),
])
def test_bad_options_are_one_line_errors_before_anything_is_written(world: Path, tmp_path: Path, extra: list[str],
                                                                    message: str) -> None:
    out = tmp_path / "never"
    code, output = run_in_process(loop_args(world, out, *extra))
    assert code == 2 and message in output, output
    assert "Traceback" not in output
    assert not out.exists()


@pytest.mark.parametrize("flag, same, message", [
    ("--val", "test", "--val and --test are the same folder"),
    ("--real-train", "test", "--real-train is the --test or --val folder"),
    ("--real-train", "val", "--real-train is the --test or --val folder"),
])
def test_the_three_sets_are_three(world: Path, tmp_path: Path, flag: str, same: str, message: str) -> None:
    args = loop_args(world, tmp_path / "never")
    args[args.index(flag) + 1] = str(world / same)
    code, output = run_in_process(args)
    assert code == 2 and message in output, output


def test_another_loop_in_the_same_out_is_refused(world: Path, finished: Path) -> None:
    args = loop_args(world, finished, "--compare", "uniform")
    args[args.index("--budget") + 1] = "12"
    code, output = run_in_process(args)
    assert code == 2 and "holds a loop with other settings (budget differ)" in output, output


def test_an_out_that_is_a_file_is_refused(world: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("mine")
    code, output = run_in_process(loop_args(world, tmp_path / "a-file"))
    assert code == 2 and "is a file" in output, output


def test_a_folder_that_is_not_a_loop_is_refused(world: Path, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, output = run_in_process(loop_args(world, tmp_path / "busy"))
    assert code == 2 and "is not a dalle-data loop" in output, output
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"], "nothing written into it, not even a lock"


def test_select_uncertain_picks_each_focused_round_by_the_learner_before_it(world: Path, tmp_path: Path) -> None:
    from dalle_data.rundir import open_run
    from dalle_data.scoring.learner import OnnxLearner

    out = tmp_path / "select"
    code, output = run_in_process(loop_args(world, out, "--select", "uncertain", "--candidates", "2", "--json"))
    assert code == 0, output
    steps = figures(out)["focused"]
    assert [s["round"] for s in steps] == [0, 1, 2]
    for r in (1, 2):
        run = open_run(out / "focused" / f"round-{r}")
        learner = out / "focused" / f"learner-{r - 1}.onnx"
        assert run.spec.select == "uncertain" and run.spec.candidates == 2 and run.spec.learner == str(learner)
        assert OnnxLearner.load(learner).labels == CLASSES.split(",")
        summary = json.loads((out / "focused" / f"round-{r}" / "summary.json").read_text())
        assert summary["select"]["learner"] == f"learner-{r - 1}.onnx"
        assert summary["select"]["passed"] >= 2 * summary["select"]["kept"] - 2  # about 2 candidates per kept image
        assert all(rec.learner_prob is not None for rec in run.records() if rec.status == "kept")
    assert not (out / "focused" / "learner-2.onnx").exists(), "no round after the last to pick"


def test_a_loop_without_select_keeps_the_key_it_had_before_select_existed() -> None:
    from dataclasses import asdict

    from dalle_data.loop import LoopSettings

    s = LoopSettings(real_train="a", val="b", test="c", budget=8, rounds=2, spec={"model": "shapes-demo"})
    assert s.key() == "0b0b31a911a82501", "the key main's loop (stop 32) gave these settings: its loops resume"
    assert LoopSettings(**{**asdict(s), "select": "uncertain"}).key() != s.key()
