"""`probe` skips unreadable images with a count and a warning, as generate does with bad sources."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.probe.test_probe import fake_output, real_folder


def _spoil(folder: Path) -> None:
    """A zero-byte .png and a text file named .jpg, beside the good images."""
    (folder / "zero.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a picture\n")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """As in tests/image_modes/conftest.py: a second intra-op thread only waits on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("unreadable")
    return fake_output(tmp / "out", 8), real_folder(tmp / "test", 6), real_folder(tmp / "train", 4, 20_000)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dalle_data.probe" and r.levelno == logging.WARNING]


def test_unreadable_test_images_are_skipped_and_counted(sets, cli, tmp_path: Path, caplog) -> None:
    out, test, _ = sets
    spoiled = shutil.copytree(test, tmp_path / "test")
    _spoil(spoiled / "stripes")
    with caplog.at_level(logging.WARNING, logger="dalle_data.probe"):
        result = cli("probe", "--train", out, "--test", spoiled, "--scorer", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["test_images"] == 12, "the 12 good images are tested, the 2 bad ones left out"
    assert report["skipped"] == {"train": 0, "test": 2}
    assert report["results"]["synthetic"]["top1"] == 1.0
    [line] = [m for m in _warnings(caplog) if "unreadable" in m]
    assert f"--test {spoiled}: skipped 2 unreadable files of 14" in line
    assert "zero.png: empty file (0 bytes)" in line and "notes.jpg: not an image PIL can read" in line


def test_unreadable_real_train_and_synthetic_images_are_skipped(sets, cli, tmp_path: Path, caplog) -> None:
    out, test, real_train = sets
    out = shutil.copytree(out, tmp_path / "out")
    (out / "imagefolder/train/checks/keptchecks0.png").write_bytes(b"")  # listed in metadata.jsonl, now empty
    real = shutil.copytree(real_train, tmp_path / "real")
    _spoil(real / "checks")
    with caplog.at_level(logging.WARNING, logger="dalle_data.probe"):
        result = cli("probe", "--train", out, "--test", test, "--real-train", real, "--scorer", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped"] == {"train": 1, "test": 0, "real-train": 2}
    results = report["results"]
    assert results["synthetic"]["train_images"] == 15 and results["real"]["train_images"] == 8
    assert results["real + synthetic"]["train_images"] == 23
    messages = _warnings(caplog)
    assert any(f"--train {out}: skipped 1 unreadable file of 16" in m and "checks0.png" in m for m in messages)
    assert any(f"--real-train {real}: skipped 2 unreadable files of 10" in m for m in messages)


def test_unreadable_rejected_images_are_counted_with_the_ablation(sets, cli, tmp_path: Path) -> None:
    out, test, _ = sets
    out = shutil.copytree(out, tmp_path / "out")
    (out / "rejected/imagefolder/stripes/rejectedstripes1.png").write_text("oops")
    result = cli("probe", "--train", out, "--test", test, "--ablate", "filter", "--scorer", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped"] == {"train": 0, "train (rejected)": 1, "test": 0}
    assert report["results"]["synthetic (unfiltered)"]["train_images"] == 31


def test_the_table_report_still_prints_with_skipped_files(sets, cli, tmp_path: Path) -> None:
    out, test, _ = sets
    spoiled = shutil.copytree(test, tmp_path / "test")
    _spoil(spoiled / "checks")
    result = cli("probe", "--train", out, "--test", spoiled, "--scorer", "tiny")
    assert result.exit_code == 0, result.stderr
    assert "12 real images" in result.stdout


def test_a_set_with_no_readable_image_is_a_one_line_error(sets, cli, tmp_path: Path) -> None:
    out, _, _ = sets
    for cls in ("stripes", "checks"):
        (tmp_path / "test" / cls).mkdir(parents=True)
    _spoil(tmp_path / "test" / "stripes")
    result = cli("probe", "--train", out, "--test", tmp_path / "test", "--scorer", "tiny", "--json")
    assert result.exit_code != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"--test {tmp_path / 'test'}: none of its 2 image files could be read" in lines[0]
    assert "zero.png: empty file (0 bytes)" in lines[0]
