"""`review` stops cleanly on Ctrl-C and SIGTERM, also when it was started with SIGINT ignored (a background
job of a shell, nohup, some CI runners), where Python installs no KeyboardInterrupt handler of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import generate_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_run(tmp_path_factory, "stop", "--classes", "cat,dog", "--per-class", "2", "--filter", "none")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_review_stops_on_a_signal_even_when_sigint_was_ignored_at_start(run_dir: Path, sig: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "dalle_data", "review", str(run_dir), "--lowest-clip", "4",
                             "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "BROWSER": "true"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert "Reviewing" in proc.stdout.readline() and "Open http://127.0.0.1:" in proc.stdout.readline()
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert proc.returncode == 0 and "Stopped; 0 of 4 reviewed" in err
    assert "no decisions made" in err and "--apply" not in err.split("Stopped;")[1]  # nothing to apply
