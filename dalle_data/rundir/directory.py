"""The run directory as ``generate`` sees it: new, finished, short or unfinished; made, cleared, finished.

Identity: ``OUT/run.json`` says that dalle-data made the directory (run id,
spec hash, the spec's content). A directory made before run.json existed
is recognised by its ``spec.yaml`` (saved with a version and a hash) and
gets a run.json when it is resumed. Anything else that is not empty is not
a run: it is refused, ``--overwrite`` or not.

State (``check``), under the run lock:

* ``new``: no directory, or one holding only the lock and temporary files a
  kill left (a kill while the very first files were written);
* ``complete``: the same spec, ended with every quota met (``_SUCCESS``);
* ``short``: the same spec, ended with a quota unmet (``summary.json`` says
  so; rerunning the same spec cannot do better, so it is not redone);
* ``incomplete``: the same spec, unfinished: resume.

A different spec is refused with what differs (compared with the content
saved in run.json, so a hand-edited ``spec.yaml`` is named as such).

``clear`` (``--overwrite``) deletes only what runs wrote: the fixed run files,
and every image and shard file of the record ids the shard intents and
markers recorded, wherever review moved them; then the run's folders if they
are left empty. A user's own files inside (``parquet/validation/x.parquet``,
``imagefolder/test/cat/photo.png``) stay.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml

from dalle_data.config import content_of, hashed_value
from dalle_data.errors import OutputDirError
from dalle_data.files import append_jsonl, atomic_write_bytes, read_json_object, remove_file, remove_temporaries
from dalle_data.rundir.layout import LOCK_FILE, Layout, shard_part
from dalle_data.rundir.lock import RunLock, RunLocked, describe_holder
from dalle_data.rundir.shards import ShardStore

log = logging.getLogger(__name__)

State = Literal["new", "complete", "short", "incomplete"]
RUN_FORMAT = 1
CLAIM_WAIT = 10.0  # seconds a part waits for OUT's lock to claim the run (other parts hold it for milliseconds)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _is_temporary(name: str) -> bool:
    return name.startswith(".tmp-") and name.endswith(".part")


class RunDir:
    """A run directory; with ``part`` (``--shard i/n``), the part's own corner of it.

    A part shares the run's identity, spec, label map and dataset folders, and has its own lock,
    summary, ``_SUCCESS`` and run log under ``OUT/parts/<i>-of-<n>/``, so parts run side by side.
    """

    def __init__(self, path: Path, split: str = "train", part: Any = None) -> None:
        self.path = Path(path)
        self.layout = Layout(self.path, split)
        self.part = part
        self.home = self.path / "parts" / part.name if part is not None else self.path
        self.lock = RunLock(self.home)
        self._created = False

    # --- identity ----------------------------------------------------------------
    def identity(self) -> dict[str, Any] | None:
        """``run.json`` if it is dalle-data's, else None."""
        try:
            data = json.loads(self.layout.run.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("tool") == "dalle-data" and data.get("spec_hash") else None

    def legacy_spec(self) -> dict[str, Any] | None:
        """A ``spec.yaml`` saved by a dalle-data run made before run.json existed."""
        try:
            data = yaml.safe_load(self.layout.spec.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        if isinstance(data, dict) and data.get("dalle_data_version") and data.get("spec_hash"):
            return data
        return None

    def is_ours(self) -> bool:
        return self.identity() is not None or self.legacy_spec() is not None

    def is_blank(self) -> bool:
        """No directory, or one holding nothing but locks and temporary files (a part's included)."""
        if not self.path.exists():
            return True
        return _only_locks(self.path)

    def saved_hash(self) -> str | None:
        identity = self.identity()
        if identity is not None:
            return str(identity["spec_hash"])
        legacy = self.legacy_spec()
        return str(legacy["spec_hash"]) if legacy else None

    def saved_content(self) -> dict[str, Any]:
        identity = self.identity()
        if identity is not None and isinstance(identity.get("spec"), dict):
            return identity["spec"]
        return self.legacy_spec() or {}

    # --- locking -----------------------------------------------------------------
    def open(self) -> None:
        """Create ``OUT`` if needed and take its lock (fails at once if another process holds it).

        A directory that is neither blank nor a run is refused before anything is written into it.
        """
        if self.path.exists() and not self.path.is_dir():
            raise OutputDirError(f"--out {self.path} is a file; choose a directory")
        if self.path.exists() and not self.is_blank() and not self.is_ours():
            self.check({}, "")  # raises: not empty and holds no dalle-data run
        self._check_parts()
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except FileExistsError:
                pass
            except OSError as err:
                raise OutputDirError(f"cannot create {self.path}: {err.strerror or err}; choose another --out") from None
            else:
                self._created = True
        if self.part is not None:
            with self._run_lock():  # an unsharded run (or a merge, an apply) holds OUT: not a part's to join now
                pass
            try:
                self.home.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputDirError(f"cannot create {self.home}: {err.strerror or err}") from None
        self.lock.acquire()

    def parts(self) -> dict[str, Path]:
        """The part folders a sharded run has made here (``OUT/parts/<i>-of-<n>``)."""
        root = self.path / "parts"
        if not root.is_dir():
            return {}
        return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and re.fullmatch(r"\d+-of-\d+", p.name)}

    def _check_parts(self) -> None:
        counts = {name.split("-of-")[1] for name in self.parts()}
        if self.part is not None:
            if counts - {str(self.part.count)}:
                raise OutputDirError(f"{self.path} is split into {sorted(counts)[0]} parts already; run its parts "
                                     f"with --shard i/{sorted(counts)[0]}, or use another --out")
            if not counts and (self.layout.summary.is_file() or self._unsharded_shards()):
                finished = self.layout.summary.is_file()
                raise OutputDirError(f"{self.path} holds an unsharded run{'' if finished else ' (unfinished)'}; a "
                                     "part (--shard) cannot join it: use another --out"
                                     + ("" if finished else f", or finish it with `dalle-data generate --resume "
                                                            f"{self.path}`"))

    def _unsharded_shards(self) -> bool:
        """Whether an unsharded run began shards here (markers or intents without a part's prefix)."""
        return any(shard_part(shard) is None for shard in ShardStore(self.layout).recorded())

    @contextlib.contextmanager
    def _run_lock(self) -> Any:
        """OUT's own lock: an unsharded run holds it throughout; a part takes it only while it claims the run."""
        if self.part is None:
            yield
            return
        lock = RunLock(self.path, f"dalle-data generate --shard {self.part} (claiming the run)")
        lock.acquire(wait=CLAIM_WAIT)
        try:
            yield
        finally:
            lock.release()

    def _hold_parts(self) -> list[RunLock]:
        """The lock of every other part here, held (``--overwrite`` must not delete a running part's files);
        ``RunLocked`` naming the part's process when one runs."""
        held: list[RunLock] = []
        try:
            for name, home in self.parts().items():
                if home == self.home:
                    continue
                lock = RunLock(home, "dalle-data generate --overwrite (clearing the run)")
                try:
                    held.append(lock.acquire())
                except RunLocked:
                    raise RunLocked(f"part {name.replace('-of-', '/')} of {self.path} is running "
                                    f"({describe_holder(lock.path)}); wait for it to finish, or stop it, "
                                    "before --overwrite") from None
        except BaseException:
            for lock in held:
                lock.release()
            raise
        return held

    def close(self, *, failed_before_start: bool = False) -> None:
        """Release the lock; a directory this process created (or its lock file) and never used goes again."""
        if failed_before_start and self._created and self.path.is_dir() and self.is_blank():
            with contextlib.suppress(OSError):  # (a directory that was there before keeps the lock file:
                import shutil  # unlinking a held lock file would let two holders in)

                shutil.rmtree(self.path)
        self.lock.release()

    # --- state -------------------------------------------------------------------
    def check(self, content: dict[str, Any], spec_hash: str, *, overwrite: bool = False) -> State:
        """Whether OUT is new, or holds this run complete, short or unfinished (see the module docstring)."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputDirError(f"--out {self.path} is a file; choose a directory")
        if self.is_blank():
            return "new"
        saved = self.saved_hash()
        if saved is None:
            raise OutputDirError(
                f"--out {self.path} is not empty and holds no dalle-data run (no run.json or saved spec); "
                "choose an empty or new directory" + (" (--overwrite deletes only what dalle-data wrote)" if overwrite else "")
            )
        if overwrite:
            for lock in self._hold_parts():  # fail before any model loads; clear() holds them while it deletes
                lock.release()
            return "new"
        if self.part is not None:
            self._check_parts()
        if saved != spec_hash:
            edited = self._spec_file_edited()
            raise OutputDirError(
                f"--out {self.path} holds a different run ({describe_difference(self.saved_content(), content)})"
                + (f"; {self.layout.spec} was edited after the run started: restore it" if edited else "")
                + f"; use another --out, rerun with the run's spec (--resume {self.path}), "
                "or replace the run (--overwrite)"
            )
        summary = self.saved_summary()
        if summary is not None and summary.get("spec_hash") == spec_hash:
            if summary.get("complete") and self.success_path.is_file():
                return "complete"
            if not summary.get("complete"):
                return "short"
        return "incomplete"

    def _spec_file_edited(self) -> bool:
        identity = self.identity()
        try:
            data = yaml.safe_load(self.layout.spec.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False
        if identity is None or not isinstance(data, dict):
            return False
        saved = identity.get("spec") or {}
        return any(k in data and hashed_value(k, data[k]) != v for k, v in saved.items())

    @property
    def summary_path(self) -> Path:
        return self.home / self.layout.summary.name

    @property
    def success_path(self) -> Path:
        return self.home / self.layout.success.name

    def saved_summary(self) -> dict[str, Any] | None:
        return read_json_object(self.summary_path)

    # --- writing -----------------------------------------------------------------
    def prepare(self, spec_text: str, spec_hash: str, content: dict[str, Any], inputs: dict[str, str],
                labels_text: str, *, overwrite: bool = False) -> None:
        """Claim OUT for this run: with ``overwrite``, clear what runs wrote; sweep what a killed run left
        half-written; then write run.json, spec.yaml and labels.json.

        A part does this under OUT's lock, and checks again first: parts of two specs started together both
        found OUT new, and only the first to claim it may make its run there.
        """
        with self._run_lock():
            if overwrite and not self.is_blank():
                self.clear()
            elif self.part is not None:
                self.check(content, spec_hash)
            self._write_identity(spec_text, spec_hash, content, inputs, labels_text)

    def _write_identity(self, spec_text: str, spec_hash: str, content: dict[str, Any], inputs: dict[str, str],
                        labels_text: str) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if self.part is None:
                remove_temporaries(self.path)
            else:
                self._sweep_part_temporaries()
            if self.identity() is None:
                identity = {"tool": "dalle-data", "format": RUN_FORMAT, "run_id": secrets.token_hex(8),
                            "created_at": _now(), "spec_hash": spec_hash, "inputs": inputs, "spec": content}
                atomic_write_text(self.layout.run, json.dumps(identity, indent=2, ensure_ascii=False) + "\n")
            atomic_write_text(self.layout.spec, spec_text)
            atomic_write_text(self.layout.labels, labels_text)
        except OSError as err:  # mkdir; file writes raise OutputDirError themselves
            raise OutputDirError(f"cannot write to {self.path}: {err.strerror or err}; choose another --out") from None

    def _sweep_part_temporaries(self) -> None:
        """A part sweeps only its own leftovers: other parts may be writing beside it."""
        prefix = self.part.prefix
        ids = {i for shard, shard_ids in ShardStore(self.layout).recorded().items() if shard.startswith(prefix)
               for i in shard_ids}
        for path in self.path.rglob(".tmp-*.part"):
            name = path.name[len(".tmp-"):]
            if prefix in name or name.split(".png.")[0] in ids:
                with contextlib.suppress(OSError):
                    path.unlink()

    def log(self, event: dict[str, Any]) -> None:
        append_jsonl(self.home / self.layout.runlog.name, event)

    def finish(self, summary: dict[str, Any]) -> None:
        """``summary.json``, then ``_SUCCESS`` only when the dataset is complete."""
        atomic_write_text(self.summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        if summary.get("complete"):
            atomic_write_text(self.success_path, "")
        else:
            remove_file(self.success_path)

    def unfinish(self) -> None:
        """Mark the run unfinished again (before it is repaired)."""
        remove_file(self.success_path)
        remove_file(self.summary_path)

    # --- --overwrite ---------------------------------------------------------------
    def clear(self) -> int:
        """Delete what runs wrote in OUT (see the module docstring); returns the number of files removed.

        The earlier run's own split and formats decide the fixed files; images and shard files are
        found by the ids and shards its intents and markers recorded, under any split. Every other part's
        lock is held meanwhile (a running part: ``RunLocked``).
        """
        held = self._hold_parts()
        try:
            return self._clear()
        finally:
            for lock in held:
                lock.release()

    def _clear(self) -> int:
        saved = self.saved_content()
        old = Layout(self.path, str(saved.get("split") or "train"))
        formats = set(saved.get("formats") or ["parquet"])
        recorded = ShardStore(old).recorded()
        ids = {i for shard_ids in recorded.values() for i in shard_ids}
        removed = 0
        folders: set[str] = set()
        roots = [p for p in old.imagefolder.glob("*") if p.is_dir()] + [old.images_dir("rejected")]
        for root in roots:
            for sub in (root.iterdir() if root.is_dir() else ()):
                if sub.is_dir():
                    folders.add(sub.name)
                    for png in sub.iterdir():
                        if png.suffix == ".png" and png.stem in ids and png.is_file():
                            removed += _unlink(png)
        for shard in recorded:
            parts = [p for p in (self.path / "parquet").glob(f"*/part-{shard}.parquet")]
            parts.append(old.parquet_part(shard, "rejected"))
            for part in parts:
                removed += _unlink(part)
            removed += _unlink(old.marker(shard)) + _unlink(old.intent(shard)) + _unlink(old.embeddings(shard))
        for path in old.run_files():
            if path in (old.card, old.metadata("dataset"), old.metadata("rejected")) and "imagefolder" not in formats:
                continue  # a Parquet-only run wrote no ImageFolder index: such a file is someone else's
            removed += _unlink(path)
        for path in self.path.rglob(".tmp-*.part"):
            removed += _unlink(path)
        for path in self.path.rglob(".apply-*.staged"):
            removed += _unlink(path)
        for home in self.parts().values():  # a sharded run's parts: their summaries, logs and locks
            for name in (old.summary.name, old.success.name, old.runlog.name, LOCK_FILE):
                if not (name == LOCK_FILE and home == self.home):  # (this part's own lock is held: it stays)
                    removed += _unlink(home / name)
            with contextlib.suppress(OSError):
                home.rmdir()
        with contextlib.suppress(OSError):
            (self.path / "parts").rmdir()
        for folder in old.run_dirs(sorted(folders)) + [p for p in old.imagefolder.glob("*") if p.is_dir()]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a user's files keep their folder
        with contextlib.suppress(OSError):
            old.imagefolder.rmdir()
        log.info("--overwrite removed %d file(s) written by an earlier run in %s", removed, self.path)
        return removed


def _only_locks(folder: Path) -> bool:
    """Nothing in ``folder`` but lock files, temporary files, and ``parts/<i>-of-<n>/`` holding only those."""
    for p in folder.iterdir():
        if p.name == LOCK_FILE or (_is_temporary(p.name) and p.is_file()):
            continue
        if p.name == "parts" and p.is_dir() and all(
            q.is_dir() and re.fullmatch(r"\d+-of-\d+", q.name) and _only_locks(q) for q in p.iterdir()
        ):
            continue
        return False
    return True


def _unlink(path: Path) -> int:
    try:
        os.unlink(path)
        return 1
    except FileNotFoundError:
        return 0
    except IsADirectoryError:
        return 0
    except OSError as err:
        raise OutputDirError(f"cannot remove {path}: {err.strerror or err}") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def describe_difference(saved: dict[str, Any], content: dict[str, Any]) -> str:
    saved, content = content_of(saved), content_of(content)
    diffs = []
    for key in dict.fromkeys([*content, *saved]):
        if saved.get(key) != content.get(key):
            diffs.append(f"{key}: {saved.get(key)!r} there, {content.get(key)!r} now")
    if not diffs:
        diffs.append("the template pack, prompts file or source images changed")
    shown = "; ".join(diffs[:3])
    return shown + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
