"""`dalle-data report` and `dedup` on a real run of the bundled shapes-demo model.

The run keeps its scorer's embeddings per shard; the report's card loads in
huggingface_hub and datasets, its page renders in Chromium with every image,
its figures gate CI, and dedup sets near-duplicates aside and back, reversibly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dalle_data.cli import app

CHROMIUM = Path("/usr/bin/chromium")
CLASSES = "red circle,blue square,green triangle"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    result = invoke("generate", "--model", "shapes-demo", "--classes", CLASSES, "--per-class", "6",
                    "--mode", "vanilla=0.5,style=0.5", "--format", "parquet", "--format", "imagefolder",
                    "--keep-rejected", "--shard-size", "4", "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture()
def copy(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    return out


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def digest_tree(out: Path, *folders: str) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted((out / folder).rglob("*")) if p.is_file()}


def test_generate_keeps_every_scored_images_embedding_per_shard(run_dir: Path) -> None:
    from dalle_data.embeddings import read_shard
    from dalle_data.planning import zero_shot_labels
    from dalle_data.rundir.reader import open_run

    rows = manifest(run_dir)
    scored = {r["id"]: r for r in rows if r["status"] in ("kept", "rejected")}
    seen: dict[str, str] = {}
    for path in sorted((run_dir / "embeddings").glob("*.npz")):
        arrays = read_shard(path)
        assert arrays is not None
        for i in arrays["ids"]:
            seen[str(i)] = path.stem
        norms = np.linalg.norm(arrays["embeddings"].astype(np.float32), axis=1)
        assert np.allclose(norms, 1.0, atol=2e-3)
        assert np.allclose(arrays["probs"].astype(np.float32).sum(axis=1), 1.0, atol=1e-2)
        assert list(arrays["labels"]) == zero_shot_labels(open_run(run_dir).spec)
    assert seen == {i: r["shard"] for i, r in scored.items()}  # every scored image, in its own shard's file
    for r in scored.values():  # the stored probabilities are the ones the filter judged by
        arrays = read_shard(run_dir / "embeddings" / f"{r['shard']}.npz")
        k = list(arrays["ids"]).index(r["id"])
        assert float(arrays["probs"][k][list(arrays["labels"]).index(r["label"])]) == pytest.approx(r["class_prob"], abs=2e-3)


def test_generate_writes_the_card_and_report_and_they_are_deterministic(run_dir: Path, copy: Path) -> None:
    files = ("README.md", "report/index.html", "report/report.json")
    before = {f: (run_dir / f).read_bytes() for f in files}
    from dalle_data.report import build_report

    build_report(copy)
    assert {f: (copy / f).read_bytes() for f in files} == before  # same run, same bytes (no timestamps)
    figures = json.loads(before["report/report.json"])
    assert figures["images"] == sum(r["status"] == "kept" for r in manifest(run_dir))
    assert set(figures["classes"]) == set(CLASSES.split(","))
    assert [d["label"] for d in figures["diversity"]] == sorted(CLASSES.split(","))
    assert figures["coverage"]["slots"]["environment"]["of"] == 4


def test_the_card_loads_without_warnings_and_datasets_loads_the_run_through_it(run_dir: Path, tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    import datasets
    from huggingface_hub import DatasetCard

    labels = [row["label"] for row in json.loads((run_dir / "labels.json").read_text())["labels"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            card = DatasetCard.load(run_dir / "README.md")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    data = card.data.to_dict()
    assert data["task_categories"] == ["image-classification"] and "synthetic" in data["tags"]
    assert data["annotations_creators"] == ["machine-generated"] and data["size_categories"] == ["n<1K"]
    names = data["dataset_info"]["features"][1]["dtype"]["class_label"]["names"]
    assert [names[str(i)] for i in range(len(names))] == labels
    ds = datasets.load_dataset(str(run_dir), split="train", cache_dir=str(tmp_path / "cache"))
    kept = {r["id"]: r for r in manifest(run_dir) if r["status"] == "kept"}
    assert ds.features["label"].names == labels and len(ds) == len(kept)
    for row in ds.remove_columns("image"):
        assert labels[row["label"]] == kept[row["id"]]["label"] == row["label_name"]
    assert "## How it was made" in card.text and "shapes-demo" in card.text


def test_the_first_screen_shows_images_and_the_grids_say_which_is_which(run_dir: Path) -> None:
    import re

    html = (run_dir / "report" / "index.html").read_text()
    assert html.index("<img") < html.index('id="warnings"'), "the page opens on warnings, not on images"
    glance = html[html.index('id="glance"'):html.index('id="warnings"')]
    for label in CLASSES.split(","):
        assert label in glance  # one image of each class, named
    images = html[html.index('id="images"'):html.index('id="coverage"')]
    # 6 kept images a class: the top and bottom grids would be the same images without their labels
    assert len(re.findall(r"highest \d+", images)) == 3 and len(re.findall(r"lowest \d+", images)) <= 3
    for section in images.split("<h3>")[1:]:
        grids = section.count("class='grid'")
        assert section.count("class='grid-label'") == grids


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: `make test` installs it")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="the playwright package is not installed")
def test_the_report_page_renders_offline_with_every_image(run_dir: Path, tmp_path: Path) -> None:
    from playwright import sync_api

    html = (run_dir / "report" / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch: images inline, no scripts
    assert "<script" not in html
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda err: errors.append(str(err)))
        requests: list[str] = []
        page.on("request", lambda req: requests.append(req.url) if not req.url.startswith(("data:", "file:")) else None)
        page.goto((run_dir / "report" / "index.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        plots = page.eval_on_selector_all("svg", "els => els.length")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert not errors and not requests
    assert len(images) >= 3 * 6 and all(done and width > 0 for done, width in images)
    assert plots >= 2 * 3  # a CLIP and a probability histogram per class (and mode)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_json_and_fail_if_gates(copy: Path) -> None:
    result = invoke("report", copy, "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures == json.loads((copy / "report" / "report.json").read_text())
    assert invoke("report", copy, "--fail-if", "short", "--fail-if", "images<1").exit_code == 0
    failed = invoke("report", copy, "--fail-if", f"images<{figures['images'] + 1}")
    assert failed.exit_code == 5
    assert failed.stderr.strip().splitlines()[-1] == (
        f"error: --fail-if images<{figures['images'] + 1}: the dataset has {figures['images']} images")
    bad = invoke("report", copy, "--fail-if", "prettiness>3")
    assert bad.exit_code == 2 and "is not a gate" in bad.stderr


def test_report_computes_embeddings_for_a_run_made_before_they_were_kept(run_dir: Path, copy: Path) -> None:
    from dalle_data.embeddings import read_shard

    shutil.rmtree(copy / "embeddings")
    assert invoke("report", copy).exit_code == 0
    for path in sorted((run_dir / "embeddings").glob("*.npz")):
        old, new = read_shard(path), read_shard(copy / "embeddings" / path.name)
        assert list(old["ids"]) == list(new["ids"])
        assert np.allclose(old["embeddings"].astype(np.float32), new["embeddings"].astype(np.float32), atol=2e-2)
    assert json.loads((copy / "report" / "report.json").read_text())["embeddings"]["missing"] == 0


def test_dedup_sets_duplicates_aside_idempotently_and_undo_brings_them_back(copy: Path) -> None:
    from dalle_data.verify import verify

    kept_before = sorted(r["id"] for r in manifest(copy) if r["status"] == "kept")
    images_before = digest_tree(copy, "imagefolder/train")
    dry = invoke("dedup", copy, "--threshold", "0.9", "--dry-run", "--json")
    planned = json.loads(dry.stdout)
    assert planned["set_aside"] > 0, "the shapes world at cosine 0.9 has near-duplicates"
    assert digest_tree(copy, "imagefolder/train") == images_before and not (copy / "review" / "dedup.json").exists()

    first = json.loads(invoke("dedup", copy, "--threshold", "0.9", "--json").stdout)
    assert first["duplicate"] == planned["set_aside"]
    rows = manifest(copy)
    aside = {r["id"] for r in rows if r["reject_reason"] == "duplicate"}
    assert len(aside) == planned["set_aside"]
    for r in rows:
        if r["id"] in aside:
            assert (copy / "rejected" / "imagefolder" / r["class_dir"] / f"{r['id']}.png").is_file()
            assert not (copy / "imagefolder" / "train" / r["class_dir"] / f"{r['id']}.png").exists()
    parquet_ids = {i for p in (copy / "parquet" / "train").glob("*.parquet") for i in pq.read_table(p, columns=["id"])["id"].to_pylist()}
    assert parquet_ids == set(kept_before) - aside
    assert verify(copy).ok
    figures = json.loads((copy / "report" / "report.json").read_text())
    assert figures["images"] == len(kept_before) - len(aside)  # the card and report were refreshed

    again = json.loads(invoke("dedup", copy, "--threshold", "0.9", "--json").stdout)
    assert again["changed"] == 0  # idempotent
    assert invoke("review", copy, "--apply").exit_code == 0  # a later review apply keeps them apart
    assert {r["id"] for r in manifest(copy) if r["reject_reason"] == "duplicate"} == aside

    undone = json.loads(invoke("dedup", copy, "--undo", "--json").stdout)
    assert undone["restored"] == len(aside)
    assert sorted(r["id"] for r in manifest(copy) if r["status"] == "kept") == kept_before
    assert digest_tree(copy, "imagefolder/train") == images_before
    assert verify(copy).ok


def test_a_reviewers_decision_wins_over_dedup(copy: Path) -> None:
    from dalle_data.review.decisions import DecisionLog
    from dalle_data.review.run import DECISIONS_FILE, load_run

    invoke("dedup", copy, "--threshold", "0.9")
    rows = manifest(copy)
    victim = next(r for r in rows if r["reject_reason"] == "duplicate")
    run = load_run(copy)
    log = DecisionLog(run.review_dir / DECISIONS_FILE, run.spec_hash)
    log.append(log.make(victim["id"], "accept", None, victim["label"]))
    assert invoke("review", copy, "--apply").exit_code == 0
    assert next(r for r in manifest(copy) if r["id"] == victim["id"])["status"] == "kept"


def test_review_orders_list_in_their_order(copy: Path) -> None:
    for args in (["--smallest-margin", "5"], ["--lowest-prob", "5"], ["--duplicates", "--threshold", "0.9"],
                 ["--disagree", "5", "--second-scorer", "tiny"]):
        result = invoke("review", copy, *args, "--format", "json")
        assert result.exit_code == 0, (args, result.stderr)
        items = json.loads(result.stdout)["items"]
        assert items and len(items) <= (len(manifest(copy)) if "--duplicates" in args else 5)
    clash = invoke("review", copy, "--lowest-prob", "5", "--smallest-margin", "5")
    assert clash.exit_code == 2 and "one at a time" in clash.stderr
