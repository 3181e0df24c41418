"""Runs on shared storage: ``--out s3://bucket/run`` (any fsspec URL: ``gs://``, ``file://``, …).

A run on an object store is made in a local mirror
(``$DALLE_DATA_HOME/remote/<hash of the URL>/``) and published as it goes:

* before it starts, the run's own state is pulled: ``run.json``, ``spec.yaml``,
  ``labels.json``, the summaries and every shard marker (not the images);
* every finished shard is pushed as whole objects, its Parquet files and PNGs
  first and its completion marker last, so a reader (or a rerun on another
  machine) sees a shard whole or not at all;
* the run-level files (spec, label map, indexes, summary, ``_SUCCESS`` last)
  are pushed when the run (or a part, or ``merge``) ends.

A rerun anywhere pulls the markers, replays them and redoes only what is
missing; parts on many machines (``--shard i/n``) write side by side under
distinct names. Object stores have no locks: run each part once at a time
(Slurm arrays and Kubernetes indexed jobs do). ``--from`` accepts URLs too:
the source tree is copied to a local cache once.

Every storage call is bounded by ``DALLE_DATA_STORAGE_TIMEOUT`` seconds (``bounded``) and says
what it waits for once it lasts longer than a heartbeat; a URL with ``user:password@`` is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dalle_data import faults
from dalle_data.errors import DalleDataError, OutputDirError
from dalle_data.llm.cache import home
from dalle_data.progress import heartbeat_seconds
from dalle_data.records import Record
from dalle_data.rundir.layout import WHERES, Layout
from dalle_data.urls import check_storage_url

log = logging.getLogger(__name__)
T = TypeVar("T")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
STATE_FILES = ("run.json", "spec.yaml", "labels.json", "summary.json", "_SUCCESS", "manifest.jsonl", "runlog.jsonl")
TIMEOUT_ENV = "DALLE_DATA_STORAGE_TIMEOUT"
DEFAULT_TIMEOUT = 300.0


def is_url(text: object) -> bool:
    """A URL for fsspec (``s3://``, ``gs://``, ``memory://``, …); ``file://`` counts as a local path."""
    return isinstance(text, str) and bool(_URL.match(text)) and not text.startswith("file://")


def local_path(text: str) -> str:
    return text[len("file://"):] if text.startswith("file://") else text


def storage_timeout() -> float:
    """Seconds one storage call may take: ``DALLE_DATA_STORAGE_TIMEOUT`` (default 300)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise DalleDataError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds above 0")
    return seconds


def bounded(url: str, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, one call to the storage at ``url`` (``what`` it does, for people): given up after
    the storage timeout; while it lasts longer than a heartbeat, a line on stderr says what it waits for.
    A call given up is left to finish (or not) on its own daemon thread; it does not hold the exit."""
    limit, beat = storage_timeout(), max(heartbeat_seconds(), 0.1)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - raised on the calling thread
            box["error"] = err

    thread = threading.Thread(target=target, name="dalle-data-storage", daemon=True)
    t0 = time.monotonic()
    thread.start()
    while True:
        thread.join(min(beat, max(limit - (time.monotonic() - t0), 0.0)))
        if not thread.is_alive():
            break
        waited = time.monotonic() - t0
        if waited >= limit:
            raise OutputDirError(f"no answer from {url} in {limit:g} s: {what}; check that the storage is up and "
                                 f"reachable, or give it longer with {TIMEOUT_ENV}=SECONDS")
        print(f"waiting for storage: {what} ({round(waited, 1):g} s; giving up after {limit:g} s)", file=sys.stderr,
              flush=True)
    err = box.get("error")
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):  # refused, reset, denied, unknown host
        raise OutputDirError(f"cannot {what}: {_first_line(err)}; check that the storage is up and reachable "
                             "(and its credentials)") from None
    if err is not None:
        raise err
    return box["value"]


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _fs(url: str, what: str = "--out") -> tuple[Any, str]:
    check_storage_url(url, what)
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with datasets
        raise DalleDataError("shared storage needs fsspec: pip install 'dalle-data[s3]'") from None
    try:
        return bounded(url, f"reach {url}", fsspec.core.url_to_fs, url)  # ftp://, sftp:// connect here
    except (ImportError, ValueError) as err:
        scheme = url.split("://", 1)[0]
        raise DalleDataError(f"cannot open {url}: {str(err).splitlines()[0]} (for {scheme}:// install its fsspec "
                             f"driver, e.g. pip install 'dalle-data[s3]' for s3://)") from None


def cache_dir(url: str, kind: str) -> Path:
    return home() / kind / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def local_run(out: str, *, pull_all: bool = False) -> tuple[Path, Mirror | None]:
    """Where the run ``out`` (a folder, or a URL on shared storage) is read and written on this machine: a
    folder as is; a URL's local mirror, pulled first (its state, or every file with ``pull_all``)."""
    if not is_url(out):
        return Path(local_path(out)), None
    mirror = Mirror(out)
    return (mirror.pull_all() if pull_all else mirror.pull()), mirror


class Mirror:
    """A remote run directory and its local mirror (see the module docstring)."""

    def __init__(self, url: str, local: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = _fs(self.url)
        self.local = local or cache_dir(self.url, "remote")

    def _remote(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _call(self, verb: str, rel: str, call: Callable[..., T], *args: Any) -> T:
        """One storage call, bounded in time (``bounded``), named for people by ``verb`` and the object's URL."""
        return bounded(self.url, f"{verb} {self.url}/{rel}".rstrip("/"), call, *args)

    # --- pull --------------------------------------------------------------------------------
    def pull(self) -> Path:
        """Replace the mirror's run state with the remote's (files that decide what a run has done)."""
        self.local.mkdir(parents=True, exist_ok=True)
        for name in (*STATE_FILES, "shards", "parts", "review"):
            target = self.local / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        try:
            exists = self._call("reach", "", self.fs.exists, self.root)
        except DalleDataError:
            raise
        except Exception as err:  # noqa: BLE001 - credentials, network: one line
            raise OutputDirError(f"cannot reach {self.url}: {_first_line(err)}") from None
        if not exists:
            return self.local
        for name in STATE_FILES:
            self._get(name)
        for prefix in ("shards", "parts", "review"):
            for rel in self._list(prefix):
                self._get(rel)
        return self.local

    def pull_all(self) -> Path:
        """Everything (``verify`` or ``review`` of a remote run reads the images too)."""
        self.pull()
        for rel in self._list(""):
            if not (self.local / rel).exists():
                self._get(rel)
        return self.local

    def _list(self, prefix: str) -> list[str]:
        base = self._remote(prefix).rstrip("/")
        try:
            found = self._call("list", prefix, self.fs.find, base)
        except FileNotFoundError:
            return []
        return [p[len(self.root) + 1:] for p in found if not p.endswith("/")]

    def _get(self, rel: str) -> None:
        target = self.local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._call("download", rel, self.fs.get_file, self._remote(rel), str(target))
        except FileNotFoundError:
            pass

    def fetch(self, paths: Iterable[Path]) -> None:
        """Download the given mirror paths that are not here yet (the report's embeddings and thumbnails)."""
        for path in paths:
            if not path.exists():
                self._get(path.relative_to(self.local).as_posix())

    # --- push --------------------------------------------------------------------------------
    def push(self, paths: Iterable[Path]) -> None:
        """Upload local files (whole objects), in the order given."""
        for path in paths:
            if path.is_file():
                rel = path.relative_to(self.local).as_posix()
                self._call("upload", rel, self.fs.put_file, str(path), self._remote(rel))

    def push_shard(self, layout: Layout, shard: str, records: Sequence[Record]) -> None:
        """A finished shard: its Parquet files and PNGs, then its marker (last)."""
        files = [layout.parquet_part(shard, where) for where in WHERES] + [layout.embeddings(shard)]
        for record in records:
            files += [layout.png(record.class_dir, record.id, where) for where in WHERES]
        self.push(files)
        self.push([layout.marker(shard)])

    def push_run(self, layout: Layout, part_home: Path | None = None) -> None:
        """The run-level files (the indexes, the text embeddings the report's look-alike check reads, the summary,
        ``_SUCCESS`` last; a part's own summary)."""
        files = [layout.spec, layout.run, layout.labels, layout.manifest, layout.card, layout.metadata("dataset"),
                 layout.metadata("rejected"), layout.vocabulary, layout.dataset_card, layout.report_html,
                 layout.report_json]
        if part_home is not None:
            files += [part_home / "runlog.jsonl", part_home / "summary.json", part_home / "_SUCCESS"]
        else:
            files += [layout.runlog, layout.summary, layout.success]
        self.push(files)


class MirrorStore:
    """A shard store that publishes each shard once it is committed locally."""

    def __init__(self, store: Any, mirror: Mirror) -> None:
        self.store = store
        self.mirror = mirror

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def commit(self, shard: str, records: Sequence[Record]) -> None:
        self.store.commit(shard, records)
        self.mirror.push_shard(self.store.layout, shard, records)
        faults.point("shard_published")


def pull_sources(url: str) -> Path:
    """A remote ``--from`` tree, copied once to a local cache (kept up to date by size)."""
    fs, root = _fs(url.rstrip("/"), "--from")
    local = cache_dir(url, "sources")
    try:
        found = bounded(url, f"read --from {url}", fs.find, root, detail=True)
    except DalleDataError:
        raise
    except Exception as err:  # noqa: BLE001
        raise DalleDataError(f"cannot read --from {url}: {_first_line(err)}") from None
    if not found:
        raise DalleDataError(f"--from {url}: nothing there")
    for path, info in found.items():
        rel = path[len(root.rstrip("/")) + 1:]
        target = local / rel
        if target.is_file() and target.stat().st_size == info.get("size"):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        bounded(url, f"download {url}/{rel}", fs.get_file, path, str(target))
    return local
