"""The real page in a real browser (Debian's chromium, driven by playwright).

Skipped, with the reason, where /usr/bin/chromium or the playwright package is
missing; `make test` installs chromium first. Never `playwright install`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.review.conftest import lowest_ids, manifest
from tests.review.test_exact_seeds import BIG_SEED, set_seeds

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

# Checked before any fixture runs, so a skip costs nothing (the run is generated only when needed).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="the playwright package is not installed"),
]


@pytest.fixture()
def browser():
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def start_server(out: Path) -> tuple[subprocess.Popen[str], str]:
    """`dalle-data review OUT --no-browser` as a user runs it; returns the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dalle_data", "review", str(out), "--lowest-clip", "4", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line.startswith("Open http://127.0.0.1:"):
            return proc, line.split(" ", 1)[1].strip()
    proc.kill()
    raise AssertionError(f"the review server did not start: {proc.stderr.read() if proc.stderr else ''}")


def test_review_in_the_browser_then_apply(browser, run_dir: Path, cli, tmp_path: Path) -> None:
    rows = manifest(run_dir)
    first, _, second, fourth = lowest_ids(run_dir, 4)
    target = "dog" if rows[second]["label"] == "cat" else "cat"
    proc, url = start_server(run_dir)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(url)
        page.wait_for_selector(".thumb")
        assert page.inner_text("#count") == "0 / 4 reviewed"
        assert page.get_attribute("#big", "data-id") == first  # the first image still to review

        page.keyboard.press("r")  # reject with the keyboard
        page.wait_for_selector('body[data-pending="0"]')
        page.click(f'.thumb[data-id="{second}"]')  # relabel with the mouse
        page.click('[data-act="relabel"]')
        page.click(f'#relabel-menu button[data-label="{target}"]')
        page.wait_for_selector('body[data-pending="0"]')
        page.click(f'.thumb[data-id="{fourth}"]')
        page.keyboard.press("a")  # accepted, then taken back after the reload
        page.wait_for_selector('body[data-pending="0"]')
        assert page.inner_text("#count") == "3 / 4 reviewed"

        page.reload()
        page.wait_for_selector(".thumb")
        assert page.inner_text("#count") == "3 / 4 reviewed"
        assert page.is_visible(f'.thumb[data-id="{first}"] .badge.reject-bg')
        assert page.is_visible(f'.thumb[data-id="{second}"] .badge.relabel-bg')
        assert page.get_attribute("#big", "data-id") not in (first, second, fourth)  # resumes on what is left
        page.keyboard.press("u")  # the undo stack survives the reload
        page.wait_for_selector('body[data-pending="0"]')
        assert page.inner_text("#count") == "2 / 4 reviewed"
        assert page.get_attribute("#big", "data-id") == fourth
        assert page.inner_text("#status").startswith("Not reviewed")
        page.click(f'.thumb[data-id="{second}"]')
        assert page.inner_text("#status").startswith(f"Relabeled to {target}")
        page.screenshot(path=str(tmp_path / "review-page.png"))
        assert (tmp_path / "review-page.png").stat().st_size > 10_000
        assert errors == []
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0 and "2 of 4 reviewed" in stderr

    result = cli("review", run_dir, "--apply")
    assert result.exit_code == 0, result.stderr
    after = manifest(run_dir)
    assert after[first]["status"] == "rejected" and after[second]["label"] == target
    old_dir = rows[first]["class_dir"]
    assert (run_dir / "rejected" / "imagefolder" / old_dir / f"{first}.png").is_file()
    assert (run_dir / "imagefolder" / "train" / target / f"{second}.png").is_file()
    lines = [json.loads(x) for x in (run_dir / "review" / "decisions.jsonl").read_text().splitlines()]
    assert [(x["id"], x["action"], x["undo"]) for x in lines] == [
        (first, "reject", False), (second, "relabel", False), (fourth, "accept", False), (fourth, "clear", True)]
    assert after[fourth] == rows[fourth]


def test_the_page_shows_64_bit_seeds_exactly(browser, run_dir: Path) -> None:
    ids = lowest_ids(run_dir, 4)
    set_seeds(run_dir, {ids[0]: BIG_SEED})  # 2**53 + 1: a JavaScript number would show ...992
    rows = manifest(run_dir)
    proc, url = start_server(run_dir)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector(".thumb")
        for rid in ids:  # the rest keep their generated 63-bit seeds, which a number would round too
            page.click(f'.thumb[data-id="{rid}"]')
            assert page.get_attribute("#big", "data-id") == rid
            facts = page.inner_text("#facts")
            assert f"· {rows[rid]['seed']}" in facts, (rows[rid]["seed"], facts)
        assert rows[ids[0]]["seed"] == 9007199254740993
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
