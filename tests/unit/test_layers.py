"""The layers of ARCHITECTURE.md hold, counting imports inside functions, and the check would notice if not.

``lint-imports`` reads ``.importlinter`` (a ``layers`` contract over every module, exhaustive, and two
``forbidden`` ones); grimp counts every import statement, in functions too, and skips only those under
``if TYPE_CHECKING:``. The tests that break the layers do so in a copy of the package.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dalle_data"
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy wins over the editable install
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", "--config", str(root / ".importlinter")],
                          cwd=root, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def lint_available() -> None:
    if not LINT.exists():
        pytest.fail("lint-imports is missing: `make test` installs import-linter (the test extra)")


def test_the_layers_hold(lint_available: None) -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "dalle_data", ignore=shutil.ignore_patterns("__pycache__", "*.pth"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


@pytest.mark.parametrize("where", ["function", "module"])
def test_an_upward_import_breaks_the_layers(where: str, tmp_path: Path, lint_available: None) -> None:
    root = copy_package(tmp_path)
    records = root / "dalle_data" / "records.py"  # the bottom layer
    upward = "from dalle_data.job import run_generate"
    text = records.read_text()
    if where == "function":
        text += f"\n\ndef _uses_the_job():\n    {upward}\n\n    return run_generate\n"
    else:
        text = text.replace("from __future__ import annotations\n", f"from __future__ import annotations\n\n{upward}\n", 1)
    records.write_text(text)
    result = lint(root)
    assert result.returncode != 0
    assert "dalle_data.records -> dalle_data.job" in result.stdout, result.stdout


def test_a_type_checking_import_does_not_count(tmp_path: Path, lint_available: None) -> None:
    root = copy_package(tmp_path)
    records = root / "dalle_data" / "records.py"
    records.write_text(records.read_text() + "\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                       "    from dalle_data.job import run_generate\n")
    result = lint(root)
    assert result.returncode == 0, result.stdout


def test_a_module_outside_every_layer_is_refused(tmp_path: Path, lint_available: None) -> None:
    root = copy_package(tmp_path)
    (root / "dalle_data" / "stray.py").write_text('"""A new module no layer names."""\n')
    result = lint(root)
    assert result.returncode != 0 and "dalle_data.stray" in result.stdout, result.stdout


def _graph(package: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (function-level too; ``TYPE_CHECKING`` ones not)."""
    mods = {}
    for path in package.rglob("*.py"):
        rel = path.relative_to(package.parent).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                pytest.fail(f"{mod}: relative import (write dalle_data.… in full)")
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                # importing a.b.c runs a/__init__ and a/b/__init__ first: those packages are imported too
                # (all but the importer's own packages, which are already running)
                for target in [name, *_parents(name)]:
                    if target in mods and target != mod and not mod.startswith(target + ".") and "." in target:
                        edges[mod].add(target)
    return edges


def _parents(name: str) -> list[str]:
    out = []
    while "." in name:
        name = name.rpartition(".")[0]
        out.append(name)
    return out


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_counting_imports_inside_functions_and_package_inits() -> None:
    assert circles(_graph(PACKAGE)) == []


def test_a_circle_through_a_package_init_is_noticed(tmp_path: Path) -> None:
    """``report/__init__`` imports ``review.images``, which runs ``review/__init__``: a review module that
    imports ``dalle_data.report`` closes a circle that no single import statement shows."""
    root = copy_package(tmp_path)
    orderings = root / "dalle_data" / "review" / "orderings.py"
    orderings.write_text(orderings.read_text() + "\n\nfrom dalle_data.report import build_report  # noqa: E402\n")
    assert any("dalle_data.report" in c and "dalle_data.review" in c for c in circles(_graph(root / "dalle_data")))


def test_every_command_module_imports_first_in_a_fresh_interpreter() -> None:
    """What the graph checks, seen at run time: each command's module imported first, alone (a circle through
    package inits shows up only then, as an ImportError of a partially initialized module)."""
    modules = sorted({"dalle_data." + p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
                     | {"dalle_data.report", "dalle_data.review", "dalle_data.rundir", "dalle_data.writers",
                        "dalle_data.generators", "dalle_data.scoring", "dalle_data.execution", "dalle_data.llm",
                        "dalle_data.device_images", "dalle_data.review.orderings", "dalle_data.report.card"})
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    failed = []
    for module in modules:  # one interpreter each: every module is the first one imported once
        result = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        if result.returncode:
            failed.append(f"{module}: {result.stderr.strip().splitlines()[-1]}")
    assert failed == []


def test_the_circle_count_notices_a_circle(tmp_path: Path) -> None:
    root = copy_package(tmp_path)
    errors = root / "dalle_data" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _late():\n    from dalle_data.naming import safe_dir_name\n\n"
                      "    return safe_dir_name\n")  # naming imports errors: a circle of two
    assert circles(_graph(root / "dalle_data")) == [["dalle_data.errors", "dalle_data.naming"]]


def test_every_deferred_internal_import_says_why() -> None:
    """Outside ``dalle_data.cli`` (whose package docstring says why: ``--help`` imports only Typer), an import
    of a dalle_data module inside a function carries a comment on its line or above its run of imports."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "cli":
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dalle_data"):
                    here = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                    up = node.lineno - 2  # a comment above a run of imports covers the run
                    while up >= 0 and lines[up].strip().startswith(("from ", "import ")):
                        up -= 1
                    above = lines[up].strip() if up >= 0 else ""
                    if "#" not in here and not above.startswith("#"):
                        unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert unexplained == [], "deferred imports with no reason given:\n" + "\n".join(unexplained)
