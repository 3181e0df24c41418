"""The run directory: one output directory per run, guarded by its spec.

``OUT/spec.yaml`` is written first and holds the validated spec with its hash;
``OUT/summary.json`` and then ``OUT/_SUCCESS`` are written last. A different
spec pointed at the same directory is refused with what differs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml

from dalle_data.errors import OutputDirError

SPEC_FILE = "spec.yaml"
SUMMARY_FILE = "summary.json"
SUCCESS_FILE = "_SUCCESS"
# What a run writes besides the spec; removed when an unfinished run starts over.
DATA_ENTRIES = ("parquet", "imagefolder", "rejected", "manifest.jsonl", SUMMARY_FILE, SUCCESS_FILE)

State = Literal["new", "complete", "incomplete"]


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _saved(self) -> dict[str, Any]:
        try:
            data = yaml.safe_load((self.path / SPEC_FILE).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise OutputDirError(f"{self.path / SPEC_FILE} cannot be read ({err}); choose another --out") from None
        if not isinstance(data, dict):
            raise OutputDirError(f"{self.path / SPEC_FILE} is not a dalle-data spec; choose another --out")
        return data

    def check(self, content: dict[str, Any], spec_hash: str) -> State:
        """Whether ``OUT`` is new, holds this run finished, or this run unfinished."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputDirError(f"--out {self.path} is a file; choose a directory")
        if not self.path.exists() or not any(self.path.iterdir()):
            return "new"
        if not (self.path / SPEC_FILE).is_file():
            raise OutputDirError(
                f"--out {self.path} is not empty and holds no dalle-data run; choose an empty or new directory"
            )
        saved = self._saved()
        if saved.get("spec_hash") != spec_hash:
            raise OutputDirError(
                f"--out {self.path} holds a different run ({describe_difference(saved, content)}); "
                "use another --out, or rerun with the saved spec: --config " + str(self.path / SPEC_FILE)
            )
        return "complete" if (self.path / SUCCESS_FILE).is_file() else "incomplete"

    def prepare(self, spec_text: str, state: State) -> None:
        """Create ``OUT`` and write the spec; an unfinished run's partial data is cleared.

        Work is deterministic, so redoing it reproduces exactly what was lost.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if state == "incomplete":
            for name in DATA_ENTRIES:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        atomic_write_text(self.path / SPEC_FILE, spec_text)

    def finish(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / SUMMARY_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(self.path / SUCCESS_FILE, "")

    def saved_summary(self) -> dict[str, Any]:
        return json.loads((self.path / SUMMARY_FILE).read_text(encoding="utf-8"))


def describe_difference(saved: dict[str, Any], content: dict[str, Any]) -> str:
    diffs = []
    for key, value in content.items():
        if key in saved and saved[key] != value:
            diffs.append(f"{key}: {saved[key]!r} there, {value!r} now")
    if not diffs:
        diffs.append("the template pack or prompts file changed")
    shown = "; ".join(diffs[:3])
    return shown + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
