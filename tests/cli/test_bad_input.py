"""Every bad input: one clear line on stderr, non-zero exit, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAST


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "no classes"),
        (["--classes", ""], "empty"),
        (["--classes", "   "], "empty"),
        (["--classes", "cat,,dog"], "empty"),
        (["--classes", "Dog", "--classes", "dog"], "duplicate class"),
        (["--classes", "cat", "--per-class", "0"], "--per-class"),
        (["--classes", "cat", "--per-class", "-3"], "--per-class"),
        (["--classes", "cat", "--min-clip", "1.5"], "--min-clip"),
        (["--classes", "cat", "--mode", "sketchy"], "unknown mode 'sketchy'"),
        (["--classes", "cat", "--mode", "vanilla=-1"], "positive"),
        (["--classes", "cat", "--format", "tfrecord"], "unknown format 'tfrecord'"),
        (["--classes", "cat", "--filter", "magic"], "--filter"),
        (["--classes", "cat", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--classes", "cat", "--model", "./missing/dir"], "no such directory"),
        (["--classes", "cat", "--scorer", "ViT-Q-99/openai"], "unknown open_clip architecture"),
        (["--classes", "cat", "--max-attempts", "1"], "max_attempts"),
        (["--classes-file", "/nonexistent/classes.txt"], "does not exist"),
        (["--classes", "cat", "--device", "tpu"], "unknown device"),
        (["--classes", "cat", "--prior-steps", "1"], "--prior-steps"),  # the unCLIP prior's scheduler needs two
    ],
)
def test_bad_flags(args: list[str], needle: str, tmp_path: Path, cli) -> None:
    base = ["--per-class", "2"] if "--per-class" not in args else []
    out = tmp_path / "out"
    result = cli("generate", *FAST, *base, *args, "--out", out)
    assert_one_line_error(result, needle)
    assert not out.exists(), "a rejected run must not create its output directory"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_device_without_a_gpu(tmp_path: Path, cli) -> None:
    result = cli("generate", *FAST, "--classes", "cat", "--per-class", "1", "--device", "cuda", "--out", tmp_path / "o")
    assert_one_line_error(result, "no CUDA GPU", "--device cpu")
    assert not (tmp_path / "o").exists()


def test_per_class_is_required(tmp_path: Path, cli) -> None:
    assert_one_line_error(cli("generate", "--classes", "cat", "--out", tmp_path / "o"), "--per-class")


def test_output_dir_with_a_different_run_is_refused_and_left_alone(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    args = ["generate", *FAST, "--classes", "cat", "--filter", "none", "--out", out, "--quiet"]
    assert cli(*args, "--per-class", "1").exit_code == 0
    data = lambda: {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".dalle-data.lock"}  # noqa: E731
    before = data()
    result = cli(*args, "--per-class", "2")
    assert_one_line_error(result, "different run", "per_class: 1 there, 2 now", "--resume", "--overwrite")
    assert "edited" not in result.stderr  # spec.yaml is as the run wrote it (guidance_scale unset: null there)
    assert data() == before  # (the lock file says who last held the directory: not data)


def test_output_dir_holding_other_files_is_refused(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = cli("generate", *FAST, "--classes", "cat", "--per-class", "1", "--out", out)
    assert_one_line_error(result, "not empty")
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_malformed_config_names_the_line(tmp_path: Path, cli) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("classes: [cat, dog]\nper_class: 3\nmodes: {vanilla: 1\n")
    assert_one_line_error(cli("generate", "--config", spec, "--out", tmp_path / "o"), "spec.yaml", "line")


def test_config_with_unknown_key_is_rejected(tmp_path: Path, cli) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("classes: [cat]\nper_class: 3\nper_clas: 4\n")
    assert_one_line_error(cli("generate", "--config", spec, "--out", tmp_path / "o"), "per_clas")


def test_malformed_prompts_file_names_the_line(tmp_path: Path, cli) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"class": "cat", "mode": "vanilla", "prompt": "a cat"}\n{"class": "cat", "prompt": \n')
    result = cli("generate", *FAST, "--prompts", prompts, "--per-class", "1", "--out", tmp_path / "o")
    assert_one_line_error(result, "line 2")
    assert not (tmp_path / "o").exists()


def test_hub_model_offline_fails_in_one_line_that_says_what_to_do(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    result = cli("generate", "--classes", "cat", "--per-class", "1", "--scorer", "tiny", "--out", tmp_path / "o")
    assert_one_line_error(result, "kandinsky-community/kandinsky-2-2-prior", "HF_HUB_OFFLINE", "--model shapes-demo")
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "o").exists()


def test_hub_scorer_without_network_fails_fast_and_clearly(tmp_path: Path) -> None:
    """A real subprocess with no HF_HUB_OFFLINE: the machine simply has no route to the Hub."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: nothing listens, connection refused at once
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dalle_data", "generate", *FAST, "--classes", "cat", "--per-class", "1",
         "--scorer", "ViT-B-32/openai", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "scorer 'ViT-B-32/openai'" in lines[0], result.stderr
    assert "cannot be reached" in lines[0] and "--scorer shapes-demo" in lines[0]
    # a real download command: the open_clip name is not a hub repo, its weights' repo is
    assert "hf download timm/vit_base_patch32_clip_224.openai" in lines[0]
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "o").exists()


def test_the_common_open_clip_names_map_to_the_repos_open_clip_downloads_from() -> None:
    import open_clip

    from dalle_data.hub import OPEN_CLIP_REPOS

    for name, repo in OPEN_CLIP_REPOS.items():
        arch, _, tag = name.partition("/")
        assert open_clip.get_pretrained_cfg(arch, tag)["hf_hub"].strip("/") == repo, name


def test_an_offline_run_of_the_default_models_fails_before_importing_torch(tmp_path: Path) -> None:
    """Naming the missing pieces needs no model library: the one-line error comes at once."""
    import os

    code = ("import sys\nfrom dalle_data.cli import main\nsys.argv = ['dalle-data', 'generate', '--classes', 'cat', "
            "'--per-class', '1', '--out', 'o']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120)
    assert "not in the local cache" in result.stderr and "scorer 'ViT-L-14/openai'" in result.stderr
    assert result.stdout.strip() == "False", "torch was imported before the offline check"
