"""A hand-made run directory's own files (spec, identity, labels, summary), valid as `generate` writes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_run_files(root: Path, complete: bool = True, **spec: Any) -> str:
    """spec.yaml (with its hash), labels.json and summary.json for ``spec``; returns the spec hash."""
    from dalle_data.config import build_spec, dump_spec
    from dalle_data.rundir import labels_for

    root.mkdir(parents=True, exist_ok=True)
    built = build_spec({"out": str(root), **spec})
    spec_hash = built.spec_hash({})
    (root / "spec.yaml").write_text(dump_spec(built, spec_hash, "test", {}))
    (root / "labels.json").write_text(labels_for(built).to_text(spec_hash))
    (root / "summary.json").write_text(json.dumps({"spec_hash": spec_hash, "complete": complete}))
    if complete:
        (root / "_SUCCESS").write_text("")
    return spec_hash
