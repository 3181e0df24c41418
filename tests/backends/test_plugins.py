"""Backends as plug-ins: a package registers one under the entry point group ``dalle_data.backends`` and
``generate --backend NAME`` and ``backends`` find it; the built-ins register the same way; a broken or clashing
plug-in is one line that names its distribution.

The plug-in package is written to ``tmp_path`` (pyproject.toml and its module) together with the
``*.dist-info`` folder (METADATA, entry_points.txt) that ``pip install`` would write for it, and that folder's
parent is put on ``sys.path``: ``importlib.metadata`` finds it exactly as an installed package, without
installing anything into the shared test environment (and offline, with no build step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dalle_data.backends import BACKENDS, BUILTIN_ENTRY_POINTS, GROUP, discover
from dalle_data.errors import PluginError

ROOT = Path(__file__).resolve().parents[2]

PLUGIN_MODULE = '''
"""A dalle-data backend plug-in: seeded noise, text-to-image only."""
import hashlib

import numpy as np
from PIL import Image

from dalle_data.backends import Backend
from dalle_data.generators.base import GenerationSettings


class NoiseGenerator:
    backend = "noiseplug"
    capabilities = frozenset({"text-to-image"})
    defaults = GenerationSettings(width=32, height=32, num_inference_steps=1, prior_num_inference_steps=1)

    def __init__(self, model):
        self.model = model

    def __call__(self, prompt, seeds, settings):
        out = []
        for text, seed in zip(prompt, seeds):
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{text}|{seed}".encode()).digest()[:8]))
            out.append(Image.fromarray(rng.integers(0, 256, (settings.height, settings.width, 3), dtype=np.uint8)))
        return out


def load(spec, device):
    return NoiseGenerator(spec.model)


def price(spec, images, most, flat=None):
    """Free: noise costs nothing."""
    return {"cost": {"currency": "USD", "per_image": 0.0, "expected": 0.0, "max": 0.0, "source": "noiseplug"}}


BACKEND = Backend(name="noiseplug", description="seeded noise from a plug-in package",
                  capabilities=frozenset({"text-to-image"}), default_model="noise-1",
                  loader="noiseplug:load", price="noiseplug:price", default_scorer="tiny", needs_device=False)
'''


def write_plugin(root: Path, dist: str, entry_point: str, module: str = PLUGIN_MODULE) -> Path:
    """A plug-in package in ``root``: its source (pyproject.toml, the module) and the dist-info pip would write
    for it in ``root/site``; returns ``root/site`` (what goes on sys.path). ``entry_point``: ``NAME = MODULE:ATTR``."""
    name, _, value = (part.strip() for part in entry_point.partition("="))
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [project]
        name = "{dist}"
        version = "0.1"
        dependencies = ["dalle-data"]

        [project.entry-points."{GROUP}"]
        {name} = "{value}"
        """))
    site = root / "site"
    site.mkdir(exist_ok=True)
    (site / "noiseplug.py").write_text(module)
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\nRequires-Dist: dalle-data\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{name} = {value}\n")
    return site


@pytest.fixture()
def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``install(dist, entry_points)``: the plug-in on sys.path for this test, the registry read afresh."""

    def add(dist: str, entry_point: str, module: str = PLUGIN_MODULE) -> Path:
        site = write_plugin(tmp_path / dist, dist, entry_point, module)
        monkeypatch.syspath_prepend(str(site))
        BACKENDS.reload()
        return site

    yield add
    monkeypatch.undo()
    sys.modules.pop("noiseplug", None)
    BACKENDS.reload()


def test_an_installed_plugin_generates_a_dataset_and_is_listed(install, cli, tmp_path: Path) -> None:
    install("dalle-data-noiseplug", "noiseplug = noiseplug:BACKEND")
    out = tmp_path / "out"
    made = cli("generate", "--backend", "noiseplug", "--classes", "cat,dog", "--per-class", "2", "--filter", "none",
               "--out", out, "--quiet")
    assert made.exit_code == 0, made.stderr
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["backend"] for r in rows} == {"noiseplug"} and {r["model"] for r in rows} == {"noise-1"}
    assert {r["label"] for r in rows} == {"cat", "dog"} and all(r["status"] == "kept" for r in rows)
    assert list((out / "parquet" / "train").glob("*.parquet"))
    listed = cli("backends")
    assert listed.exit_code == 0
    assert "noiseplug: seeded noise from a plug-in package" in listed.stdout
    assert "from: dalle-data-noiseplug (a plug-in)" in listed.stdout
    rows = {r["name"]: r for r in json.loads(cli("backends", "--json").stdout)}
    assert list(rows) == ["diffusers", "openai", "noiseplug"]  # the built-ins first, then plug-ins by name
    assert rows["noiseplug"]["distribution"] == "dalle-data-noiseplug" and rows["diffusers"]["distribution"] == "dalle-data"
    assert rows["noiseplug"]["price_basis"] == "Free: noise costs nothing."


def test_a_plugin_is_found_by_a_fresh_process(tmp_path: Path) -> None:
    site = write_plugin(tmp_path / "plug", "dalle-data-noiseplug", "noiseplug = noiseplug:BACKEND")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    result = subprocess.run([sys.executable, "-m", "dalle_data", "backends", "--backend", "noiseplug", "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["modes"] == ["vanilla", "style", "adversarial"]


@pytest.mark.parametrize(("entry", "module", "name", "says"), [
    ("noiseplug = noiseplug_missing:BACKEND", PLUGIN_MODULE, "noiseplug",
     "cannot be loaded (ModuleNotFoundError: No module named"),
    ("noiseplug = noiseplug:BACKEND", PLUGIN_MODULE.replace("import numpy", "import numpy_nope"), "noiseplug",
     "cannot be loaded (ModuleNotFoundError"),
    ("noiseplug = noiseplug:NoiseGenerator", PLUGIN_MODULE, "noiseplug", "not a dalle_data.backends.Backend"),
    ("noise = noiseplug:BACKEND", PLUGIN_MODULE, "noise", "names a backend 'noiseplug'"),
])
def test_a_broken_plugin_asked_for_is_one_line_naming_its_distribution(install, cli, entry: str, module: str,
                                                                       name: str, says: str) -> None:
    install("broken-plug", entry, module)
    result = cli("generate", "--classes", "cat", "--per-class", "1", "--backend", name, "--dry-run")
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert says in lines[0] and "of the distribution broken-plug" in lines[0], lines[0]
    assert "pip uninstall broken-plug" in lines[0]


@pytest.mark.parametrize(("entry", "module"), [
    ("noiseplug = noiseplug_missing:BACKEND", PLUGIN_MODULE),
    ("openai = noiseplug:BACKEND", PLUGIN_MODULE.replace('name="noiseplug"', 'name="openai"')),
])
def test_a_broken_or_clashing_plugin_does_not_stop_the_other_backends(install, cli, entry: str,
                                                                      module: str) -> None:
    """One broken third-party package must not stop review, verify or a diffusers run: it is a warning (the
    built-in keeps its name when a plug-in takes it), and an error only when its backend is asked for."""
    install("broken-plug", entry, module)
    for args in (["backends"], ["generate", "--classes", "cat", "--per-class", "1", "--dry-run"],
                 ["generate", "--classes", "cat", "--per-class", "1", "--backend", "openai", "--dry-run"]):
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
    problems = BACKENDS.problems()
    assert len(problems) == 1 and "of the distribution broken-plug" in str(problems[0])
    assert "pip uninstall broken-plug" in str(problems[0])
    assert BACKENDS["openai"].price == "dalle_data.pricing:api_cost"  # the built-in, not the plug-in


def test_two_plugins_of_one_name_clash(install) -> None:
    install("first-plug", "noiseplug = noiseplug:BACKEND")
    install("second-plug", "noiseplug = noiseplug:BACKEND")
    with pytest.raises(PluginError, match=r"'noiseplug' of the distribution second-plug clashes .* from first-plug"):
        BACKENDS["noiseplug"]
    assert "noiseplug" not in list(BACKENDS)  # neither is used: which one was meant is not known


def test_the_builtins_are_declared_as_entry_points_and_found_without_them() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]
    assert declared == dict(BUILTIN_ENTRY_POINTS)  # the source-checkout fallback repeats pyproject.toml
    backends, origin, problems = discover(points=[])  # installed metadata that predates the entry points
    assert problems == {}  # nothing broken among the built-ins
    assert list(backends) == ["diffusers", "openai"] and set(origin.values()) == {"dalle-data"}
    assert backends["diffusers"] is BACKENDS["diffusers"]


def test_reading_the_plugins_waits_for_the_first_backend_asked_for() -> None:
    code = ("import sys, importlib.metadata as m; calls = []; real = m.entry_points\n"
            "m.entry_points = lambda **kw: calls.append(kw.get('group')) or real(**kw)\n"
            "import dalle_data.backends as b, dalle_data.cli\n"
            "before = calls.count(b.GROUP); list(b.BACKENDS); list(b.BACKENDS); print(before, calls.count(b.GROUP))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]  # none at import (--help stays fast), once when asked
