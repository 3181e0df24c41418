"""Every command line shown in the README and in `--help` runs as written.

Each line runs through bash (quotes, redirections and comments as a user would
type them) in a sandbox holding what the examples refer to: a finished run
`out`, the demo's `demo-out` (and a copy, `shapes-out`), real test sets, a photo folder, `classes.txt`. It
must exit 0, or 3 (a short dataset: documented), or fail with one of the
documented one-line errors of a machine without a network or an API key
(`not in the local cache`, `OPENAI_API_KEY is not set`, `cannot connect`). A
`review` that serves the page must print its URL; it is then stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED_FAILURES = ("not in the local cache", "OPENAI_API_KEY is not set", "cannot connect to")
SHAPES = ["--model", "shapes-demo", "--classes", "red circle,blue star", "--per-class", "8"]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        lines = [line.strip() for line in block.splitlines()]
        prompted = any(line.startswith("$ ") for line in lines)
        for line in lines:
            if prompted and line.startswith("$ dalle-data "):
                commands.append(line[2:])
            elif not prompted and line.startswith("dalle-data "):
                commands.append(line)
    return commands


def help_commands() -> list[str]:
    from typer.testing import CliRunner

    from dalle_data.cli import app

    runner = CliRunner()
    commands = []
    for args in ([], ["generate"], ["prompts"], ["probe"], ["focus"], ["loop"], ["review"], ["verify"], ["demo-real"],
                 ["report"], ["dedup"], ["backends"]):
        result = runner.invoke(app, [*args, "--help"], terminal_width=80)
        assert result.exit_code == 0
        assert "%%" not in result.output, f"a literal %% in dalle-data {' '.join(args)} --help"
        commands += [line.strip() for line in result.output.splitlines() if line.strip().startswith("dalle-data ")]
    return commands


def _cli(*args: str, cwd: Path) -> None:
    """The sandbox's own inputs are made in this process (no interpreter start per command); the examples
    themselves each run as a user runs them, in a shell."""
    from typer.testing import CliRunner

    from dalle_data.cli import app

    here = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        os.chdir(here)
    assert result.exit_code in (0, 3), result.output


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    box = tmp_path_factory.mktemp("examples")
    for name in ("examples", "templates"):
        (box / name).symlink_to(ROOT / name)
    _cli("generate", *SHAPES, "--keep-rejected", "--format", "parquet", "--format", "imagefolder",
         "--out", "out", "--allow-short", cwd=box)
    _cli("generate", *SHAPES, "--format", "parquet", "--format", "imagefolder", "--out", "demo-out",
         "--allow-short", cwd=box)
    shutil.copytree(box / "demo-out", box / "shapes-out")  # the run `dalle-data --help`'s own example writes
    for folder, seed in (("real_val", "2"), ("real_train", "3")):
        _cli("demo-real", folder, "--classes", "red circle,blue star", "--per-class", "6", "--seed", seed, cwd=box)
    for cls in ("dalmatian", "nurse"):
        (box / "my_photos" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (48, 48), (40 * i, 90, 200)).save(box / "my_photos" / cls / f"{i}.png")
    (box / "classes.txt").write_text("dalmatian\n")
    shutil.copy(ROOT / "templates" / "default.yaml", box / "my_pack.yaml")
    shutil.copy(ROOT / "examples" / "spec.yaml", box / "spec.yaml")
    _cli("prompts", "--classes", "dalmatian", "-n", "5", "-o", "p.jsonl", cwd=box)
    shutil.copy(box / "p.jsonl", box / "prompts.jsonl")  # examples that read it may run before the one that writes it
    _focus_inputs(box)
    return box


def _focus_inputs(box: Path) -> None:
    """What the focus examples read: a classifier's predictions on real_val (it takes every red circle on
    the night background for a blue star), their groups and probe's saved predictions."""
    import csv
    import json

    from dalle_data.demo.world import BACKGROUNDS

    rows = [json.loads(line) for line in (box / "real_val" / "metadata.jsonl").read_text().splitlines()]
    preds, groups = [], []
    for row in rows:
        path = f"real_val/{row['file_name']}"
        wrong = row["label"] == "red circle" and row["background"] == "night"
        preds.append({"path": path, "label": row["label"], "pred": "blue star" if wrong else row["label"]})
        groups.append({"file_name": path, "environment": BACKGROUNDS[row["background"]]})
    (box / "preds.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    with open(box / "preds.csv", "w", newline="") as f:
        csv.DictWriter(f, ["path", "label", "pred"]).writeheader()
        csv.DictWriter(f, ["path", "label", "pred"]).writerows(preds)
    (box / "val-groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
    _cli("probe", "--train", "demo-out", "--real-train", "real_train", "--test", "real_val", cwd=box)


def workdir(line: str, box: Path, n: int) -> Path:
    """Where a line runs: the sandbox when it names the finished run `out`; else a fresh folder with the
    same inputs, so that examples writing the default `out` do not meet each other's runs."""
    if re.search(r"(^|\s)out(/|\s|$)", line) or line.split()[1] != "generate":
        return box
    fresh = box / f"fresh-{n:03d}"
    fresh.mkdir()
    written = set(re.findall(r"--out\s+(\S+)", line))  # a run the line makes is not there yet
    reads_demo = "demo-out/" in line and "demo-out" not in written  # its spec or focus
    for entry in box.iterdir():
        if (entry.name not in ("out", "demo-out", *written) or entry.name == "demo-out" and reads_demo) \
                and not entry.name.startswith("fresh-"):
            (fresh / entry.name).symlink_to(entry)
    return fresh


def line_env(box: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    # One thread a line: two lines run at a time beside the suite's workers on two cores, and torch's
    # threads fighting over them made the CNN examples ten times slower.
    env.update(HF_HUB_OFFLINE="1", DALLE_DATA_RETRY_BASE_DELAY="0", DALLE_DATA_HOME=str(box / "home"),
               OMP_NUM_THREADS="1", DALLE_DATA_CNN_MIN_STEPS="30",  # the CNN lines run as written, briefly
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", BROWSER="true")
    return env


@pytest.fixture(scope="module")
def warm(sandbox: Path):
    """Every line runs through bash as written; its `dalle-data` is forked from one process that has made
    the imports once (tests/warm_cli.py): eighty interpreter starts were most of this test's time."""
    from tests.warm_cli import WarmCli

    with WarmCli(line_env(sandbox)) as server:
        yield server


def run_line(line: str, box: Path, env: dict[str, str] | None = None) -> None:
    env = env or line_env(box)
    serves = line.split()[1] == "review" and not re.search(r"--apply|--format|--json|--export-html", line)
    if serves:
        proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=box, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline() + proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        assert "Open http://127.0.0.1:" in first, f"{line}\n{first}{proc.stderr.read()}"
        return
    result = subprocess.run(["bash", "-c", line], cwd=box, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode in (0, 3):
        return
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and any(d in errors[0] for d in DOCUMENTED_FAILURES), (
        f"`{line}` exited {result.returncode}:\n{result.stderr[-2000:]}")


def test_readme_and_help_examples_run_as_written(sandbox: Path, warm) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # A line shown twice (in the README and in --help, or with another comment) runs once: the same command.
    lines = list({re.split(r"\s+#\s", line)[0].strip(): line for line in readme_commands() + help_commands()}.values())
    assert len(lines) > 40, "the examples were not found"
    # demo-real lines write the sets probe lines read; the first focus line writes the demo-out/focus.yaml
    # that the focused generate line reads.
    # A probe line that saves a learner writes the learner.onnx a `generate --select` line reads.
    first = [line for line in lines if line.split()[1] in ("demo-real", "focus") or "--save-learner" in line]
    serial = [line for line in lines if re.search(r"(^|\s)out(/|\s|$)", line)]  # share the finished run `out`
    parallel = [line for line in lines if line not in serial and line not in first]

    def attempt(item: tuple[int, str]) -> str | None:
        n, line = item
        try:
            run_line(line, workdir(line, sandbox, n), warm.env)
        except AssertionError as err:
            return str(err)
        return None

    failures = [f for f in map(attempt, enumerate(first, len(lines))) if f]
    with ThreadPoolExecutor(max_workers=2) as pool:  # each line is its own process: two at a time on two cores
        failures += [f for f in pool.map(attempt, enumerate(parallel)) if f]
    failures += [f for f in map(attempt, enumerate(serial, len(parallel))) if f]
    assert not failures, "\n\n".join(failures)


def test_the_generate_help_names_every_mode_and_preset() -> None:
    from typer.testing import CliRunner

    from dalle_data.cli import app

    text = " ".join(CliRunner().invoke(app, ["generate", "--help"], terminal_width=200).output.split())
    for mode in ("vanilla", "style", "adversarial", "variation", "fuse", "inpaint"):
        assert mode in text.split("--mode", 1)[1].split("--model")[0], mode
    assert "shapes-demo" in text.split("--model", 1)[1].split("--prior")[0]
    assert "shapes-demo" in text.split("--scorer", 1)[1].split("--out")[0]


def test_n_means_per_class_in_every_command() -> None:
    from typer.testing import CliRunner

    from dalle_data.cli import app

    for command in ("generate", "prompts"):
        text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        line = next(x for x in text.splitlines() if x.strip().startswith("-n"))
        assert "--per-class" in line, (command, line)


def test_a_pipe_closed_early_exits_quietly(tmp_path: Path) -> None:
    result = subprocess.run(["bash", "-c", f"{sys.executable} -m dalle_data prompts --classes dalmatian,cat "
                             "-n 3000 | head -1"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0 and result.stdout.count("\n") == 1
    assert "Error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_non_tty_output_keeps_commands_on_one_line_and_figures_whole(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-m", "dalle_data", "generate", *FAST, "--classes",
                             "a rather long class name,another long class name", "--per-class", "1",
                             "--filter", "none", "--format", "parquet", "--format", "imagefolder",
                             "--out", str(tmp_path / "a-long-output-directory-name")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    loading = [x for x in result.stdout.splitlines() if "load_dataset(" in x]
    assert loading and all(x.count("(") == x.count(")") for x in loading), result.stdout
    assert "…" not in result.stdout
