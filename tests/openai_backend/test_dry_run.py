"""`generate --dry-run`: the plan and a cost estimate, with no model loaded and no request made."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dalle_data.pricing import IMAGE_PRICES_USD
from tests.cli.test_bad_input import assert_one_line_error
from tests.openai_backend.fake_server import FakeOpenAI

ARGS = ["generate", "--backend", "openai", "--classes", "cat,dog", "--per-class", "10", "--dry-run"]


def dry(cli, *extra: str) -> dict:
    result = cli(*ARGS, *extra, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_and_cost_from_the_price_table(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    report = dry(cli, "--out", tmp_path / "o")
    per = IMAGE_PRICES_USD["gpt-image-1.5"]["medium"]["1024x1024"]
    assert report["images"] == {"target": 20, "max": 100}
    assert report["cost"]["per_image"] == per
    assert report["cost"]["expected"] == pytest.approx(20 * per) and report["cost"]["max"] == pytest.approx(100 * per)
    assert "pricing.py" in report["cost"]["source"]
    assert [(s["class"], s["target"], s["max_attempts"]) for s in report["slots"]] == [("cat", 10, 50), ("dog", 10, 50)]
    assert api_env.count() == 0 and not (tmp_path / "o").exists()
    high = dry(cli, "--quality", "high", "--size", "1536")
    assert high["cost"]["per_image"] > IMAGE_PRICES_USD["gpt-image-1.5"]["high"]["1024x1024"]
    assert "pixel area" in high["cost"]["note"]


def test_prices_can_be_overridden(api_env: FakeOpenAI, cli, tmp_path: Path, monkeypatch) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-image-2:\n  medium:\n    1024x1024: 0.05\n")
    monkeypatch.setenv("DALLE_DATA_PRICES", str(prices))
    report = dry(cli, "--model", "gpt-image-2")
    assert report["cost"]["per_image"] == 0.05 and report["cost"]["expected"] == pytest.approx(1.0)
    assert "DALLE_DATA_PRICES" in report["cost"]["source"]
    assert dry(cli, "--price-per-image", "0.5")["cost"]["expected"] == pytest.approx(10.0)
    monkeypatch.delenv("DALLE_DATA_PRICES")
    unknown = dry(cli, "--model", "gpt-image-9")
    assert unknown["cost"]["per_image"] is None and "--price-per-image" in unknown["cost"]["note"]
    assert api_env.count() == 0


def test_a_broken_price_file_is_one_line(api_env: FakeOpenAI, cli, tmp_path: Path, monkeypatch) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-image-2: [1, 2]\n")
    monkeypatch.setenv("DALLE_DATA_PRICES", str(prices))
    assert_one_line_error(cli(*ARGS), "DALLE_DATA_PRICES", "gpt-image-2")


def test_the_human_report_names_images_and_cost(api_env: FakeOpenAI, cli) -> None:
    result = cli(*ARGS)
    assert result.exit_code == 0, result.stderr
    assert "dry run: nothing generated" in result.stdout and "images: 20 if every image is kept, at most 100" in result.stdout
    assert "cost: $0.68 if every image is kept, at most $3.40" in result.stdout


def test_dry_run_with_llm_counts_cached_classes_and_calls_nothing(api_env: FakeOpenAI, cli) -> None:
    assert cli("prompts", "--classes", "cat", "--llm", "m", "-n", "50").exit_code == 0  # caches cat
    calls = api_env.count()
    report = dry(cli, "--llm", "m")
    assert report["llm"]["classes_cached"] == 1 and report["llm"]["requests_at_least"] == 1
    assert api_env.count() == calls


def test_dry_run_imports_no_model_library(api_env: FakeOpenAI, tmp_path: Path) -> None:
    code = (
        "import sys; from dalle_data.cli import app\n"
        f"try: app({ARGS + ['--llm', 'm', '--out', str(tmp_path / 'o')]!r})\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'open_clip', 'openai') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert api_env.count() == 0 and not (tmp_path / "o").exists()


def test_dry_run_shows_the_token_basis_and_the_date_prices_were_checked(api_env: FakeOpenAI, cli, tmp_path: Path) -> None:
    from PIL import Image

    from dalle_data.pricing import OUTPUT_TOKENS, PRICES_CHECKED, TOKEN_PRICES_USD

    cost = dry(cli, "--quality", "high")["cost"]
    rates = TOKEN_PRICES_USD["gpt-image-1.5"]
    basis = cost["token_basis"]
    assert cost["prices_checked"] == PRICES_CHECKED and basis["checked"] == PRICES_CHECKED
    assert basis["tokens"]["image_output"] == OUTPUT_TOKENS["high"]["1024x1024"]
    expected = (basis["tokens"]["text_input"] * rates["text_input"] + basis["tokens"]["image_output"] * rates["image_output"]) / 1e6
    assert basis["per_image"] == pytest.approx(expected)
    assert basis["per_image"] == pytest.approx(cost["per_image"], rel=0.05)  # the two bases agree for generations
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    Image.new("RGB", (32, 32), (9, 90, 200)).save(tmp_path / "photos" / "cat" / "a.png")
    edits = cli("generate", "--backend", "openai", "--classes", "cat", "--per-source", "1", "--mode", "inpaint",
                "--from", tmp_path / "photos", "--dry-run", "--json")
    assert edits.exit_code == 0, edits.stderr
    assert json.loads(edits.stdout)["cost"]["token_basis"]["tokens"]["image_input"] > 0  # an edit bills its input
    human = cli(*ARGS)
    assert f"prices checked {PRICES_CHECKED}" in human.stdout and "token basis $" in human.stdout


@pytest.mark.parametrize("model", ["dall-e-2", "dall-e-3", "gpt-image-1"])
def test_retired_models_are_refused_naming_the_replacement(api_env: FakeOpenAI, cli, model: str) -> None:
    assert_one_line_error(cli(*ARGS, "--model", model), f"{model} was retired", "--model gpt-image-1.5")
    assert api_env.count() == 0
