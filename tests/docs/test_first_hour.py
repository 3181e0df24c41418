"""What a new user reads first says one thing: one review advice everywhere, examples that do not write
over the demo's run, and a review that names its decisions file only once there is one."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from dalle_data.advice import REVIEW_FLAG, REVIEW_ORDER, review_command
from dalle_data.cli import app
from dalle_data.review.orderings import ORDERINGS

ROOT = Path(__file__).resolve().parents[2]
REVIEW = re.compile(r"dalle-data review \S+ (--[a-z-]+)")


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0
    return result.output


def _first_review_flag(text: str) -> str:
    found = REVIEW.search(text)
    assert found, "no review advice found"
    return found.group(1)


def test_the_advised_review_order_is_the_one_the_benchmark_found_best() -> None:
    # benchmarks/review_orderings.py (README, "review"): the margin order found 2.5-3x as many wrong-label
    # images as chance in the first 16; the CLIP-score order no more than chance
    assert REVIEW_ORDER == "margin" and ORDERINGS[REVIEW_ORDER].flag == REVIEW_FLAG
    assert review_command("OUT", 16) == f"dalle-data review OUT {ORDERINGS['margin'].flag} 16"


def test_one_review_advice_in_the_readme_the_help_the_demo_and_the_card(tmp_path: Path) -> None:
    from dalle_data.report.card import LIMITATIONS

    flag = ORDERINGS[REVIEW_ORDER].flag
    makefile = (ROOT / "Makefile").read_text()
    places = {
        "README": (ROOT / "README.md").read_text(),
        "dalle-data --help": _help(),
        "dalle-data review --help": _help("review"),
        "make demo's closing lines": makefile[makefile.index("Review it:"):],
        "the dataset card": " ".join(LIMITATIONS),
    }
    assert {where: _first_review_flag(text) for where, text in places.items()} == {where: flag for where in places}


def _generate_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("dalle-data generate ")]


def test_no_example_writes_over_the_demos_run() -> None:
    demo_out = re.search(r"^DEMO_OUT \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    lines = _generate_lines((ROOT / "README.md").read_text())
    for command in ("generate", "focus", "loop", "probe", "prompts"):
        lines += _generate_lines(_help(command))
    lines += _generate_lines(_help())
    assert len(lines) > 10
    writes_demo = [line for line in lines if re.search(rf"--out\s+{re.escape(demo_out)}(\s|$)", line)]
    assert not writes_demo, f"these examples write over `make demo`'s {demo_out}/: {writes_demo}"
