"""The run directory: one output directory per run, guarded by its spec.

``OUT/spec.yaml`` is written first and holds the validated spec with its hash;
``OUT/summary.json`` and then ``OUT/_SUCCESS`` are written last. A different
spec pointed at the same directory is refused with what differs; the same
spec resumes (finished shards are kept, temporary files swept);
``--overwrite`` clears a run and starts over. ``OUT/runlog.jsonl`` records
every start and end, with versions and model ids, so a dataset can be traced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml

from dalle_data.errors import OutputDirError

SPEC_FILE = "spec.yaml"
SUMMARY_FILE = "summary.json"
SUCCESS_FILE = "_SUCCESS"
RUNLOG_FILE = "runlog.jsonl"
# Everything a run writes; removed by --overwrite.
RUN_ENTRIES = ("parquet", "imagefolder", "rejected", "shards", "manifest.jsonl", RUNLOG_FILE,
               SUMMARY_FILE, SUCCESS_FILE, SPEC_FILE)

State = Literal["new", "complete", "incomplete"]


def atomic_write_text(path: Path, text: str) -> None:
    from dalle_data.writers.base import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


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

    def holds_run(self) -> bool:
        return (self.path / SPEC_FILE).is_file()

    def clear(self) -> None:
        """Remove everything a run wrote (``--overwrite``); other files stay."""
        for name in RUN_ENTRIES:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def prepare(self, spec_text: str, state: State) -> None:
        """Create ``OUT``, write the spec, sweep what a killed run left half-done."""
        from dalle_data.writers.base import remove_temporaries

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if state == "incomplete":
                remove_temporaries(self.path)
            atomic_write_text(self.path / SPEC_FILE, spec_text)
        except OSError as err:  # mkdir; file writes raise OutputDirError themselves
            raise OutputDirError(f"cannot write to {self.path}: {err.strerror or err}; choose another --out") from None

    def log(self, event: dict[str, Any]) -> None:
        from dalle_data.writers.base import append_jsonl

        append_jsonl(self.path / RUNLOG_FILE, event)

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
