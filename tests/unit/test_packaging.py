"""The package metadata installs without setuptools' deprecation banners."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[2]


def test_the_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # A table ({text = ...}) made setuptools print its `project.license` deprecation banner three times per
    # install; an SPDX string (PEP 639) needs setuptools 77 or later.
    assert isinstance(data["project"]["license"], str) and data["project"]["license"] == "Apache-2.0"
    (req,) = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    version = re.search(r">=\s*(\d+)", req)
    assert version and int(version.group(1)) >= 77, req
    assert not any(c.startswith("License ::") for c in data["project"].get("classifiers", [])), \
        "PEP 639 forbids licence classifiers beside an SPDX expression"
