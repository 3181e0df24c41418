"""The on-disk cache of LLM answers: a rerun costs nothing and gives the same prompts.

Entries live under the dalle-data home directory (``$DALLE_DATA_HOME``,
default ``~/.cache/dalle-data``) as ``llm/<key[:2]>/<key>.json``. The key is
the SHA-256 of what decides the answer (model, base URL, class, request
parameters, prompt version); the entry holds that request description and the
answer, never a credential. A cache that cannot be read or written is skipped
with a warning: it saves money, it is never needed for correctness.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOME_ENV = "DALLE_DATA_HOME"
DEFAULT_HOME = "~/.cache/dalle-data"


def home() -> Path:
    """The dalle-data home directory (``$DALLE_DATA_HOME`` or ``~/.cache/dalle-data``)."""
    return Path(os.environ.get(HOME_ENV, "").strip() or DEFAULT_HOME).expanduser()


def cache_key(request: dict[str, Any]) -> str:
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers by request key. ``read=False`` (``--no-cache``) skips lookups but still stores."""

    def __init__(self, root: Path | None = None, *, read: bool = True) -> None:
        self.root = root if root is not None else home() / "llm"
        self.read = read

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.read:
            return None
        path = self.path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable cache entry %s (%s)", path, err)
            return None
        return data if isinstance(data, dict) else None

    def has(self, key: str) -> bool:
        return self.read and self.path(key).is_file()

    def put(self, key: str, value: dict[str, Any]) -> None:
        path = self.path(key)
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning("cannot write the LLM cache at %s (%s); answers will not be reused", path, err.strerror or err)
