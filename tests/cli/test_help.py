"""`dalle-data --help` and every command's --help: fast, no torch, with examples."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

COMMANDS = ["generate", "prompts", "review", "report", "dedup"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dalle_data", *args], capture_output=True, text=True, timeout=60
    )


def test_root_help_lists_commands_and_examples() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout
    assert "dalle-data generate --classes dalmatian" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_examples(command: str) -> None:
    result = _run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Examples:" in result.stdout
    assert f"dalle-data {command}" in result.stdout


def test_generate_help_names_every_documented_flag() -> None:
    out = _run("generate", "--help").stdout
    for flag in ["--classes", "--classes-file", "--per-class", "--mode", "--model", "--scorer", "--out",
                 "--format", "--seed", "--min-clip", "--filter", "--max-attempts", "--keep-rejected",
                 "--templates", "--prompts", "--config", "--batch-size", "--device", "--quiet", "--json"]:
        assert flag in out, flag


def test_cli_start_imports_no_torch_and_is_fast() -> None:
    code = (
        "import sys, time; t=time.perf_counter(); import dalle_data.cli; "
        "print(time.perf_counter()-t); print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["False", "False"], "heavy libraries imported at CLI start-up"
    start = time.perf_counter()
    assert _run("--help").returncode == 0
    # Well under a second on an idle machine; generous here so a loaded CI box does not flake.
    assert time.perf_counter() - start < 3.0
