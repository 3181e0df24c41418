"""Progress display: a rich live table on a terminal, plain log lines otherwise.

The runner reports absolute counts per class; the display decides how to show
them. ``NullProgress`` shows nothing (``--quiet``, ``--json``, library use).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)


class Progress(Protocol):
    def start(self, targets: dict[str, int]) -> None: ...
    def update(self, cls: str, generated: int, kept: int) -> None: ...
    def round_done(self, round_no: int, generated: int, kept: int) -> None: ...
    def stop(self) -> None: ...


class NullProgress:
    def start(self, targets: dict[str, int]) -> None:
        pass

    def update(self, cls: str, generated: int, kept: int) -> None:
        pass

    def round_done(self, round_no: int, generated: int, kept: int) -> None:
        pass

    def stop(self) -> None:
        pass


HEARTBEAT_ENV = "DALLE_DATA_HEARTBEAT"


def heartbeat_seconds() -> float:
    """How often a long wait says that it is still waiting: ``DALLE_DATA_HEARTBEAT`` seconds (default 30)."""
    import os

    try:
        return float(os.environ.get(HEARTBEAT_ENV, "") or 30.0)
    except ValueError:
        return 30.0


class LineProgress(NullProgress):
    """One line per round on stderr, and a heartbeat line at least every ``DALLE_DATA_HEARTBEAT``
    seconds (default 30) while a round runs: for CI logs, ``--json`` runs and other non-terminals."""

    def __init__(self, heartbeat: float | None = None) -> None:
        self._t0 = self._last = time.perf_counter()
        self.heartbeat = heartbeat_seconds() if heartbeat is None else heartbeat
        self._counts: dict[str, tuple[int, int]] = {}
        self._targets: dict[str, int] = {}

    def start(self, targets: dict[str, int]) -> None:
        self._targets = dict(targets)

    def update(self, cls: str, generated: int, kept: int) -> None:
        self._counts[cls] = (generated, kept)
        if time.perf_counter() - self._last >= self.heartbeat:
            made = sum(g for g, _ in self._counts.values())
            kept_all = sum(k for _, k in self._counts.values())
            self._print(f"working: generated {made}, kept {kept_all} of {sum(self._targets.values())}, "
                        f"{made / max(time.perf_counter() - self._t0, 1e-9):.2f} img/s")

    def round_done(self, round_no: int, generated: int, kept: int) -> None:
        rate = generated / max(time.perf_counter() - self._t0, 1e-9)
        acc = kept / generated if generated else 0.0
        self._print(f"round {round_no}: generated {generated}, kept {kept} ({acc:.0%}), {rate:.2f} img/s")

    def _print(self, line: str) -> None:
        self._last = time.perf_counter()
        print(line, file=sys.stderr, flush=True)


class RichProgress(NullProgress):
    """Per class: kept / target bar, generated count, images per second, ETA."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress as RP, TextColumn, TimeRemainingColumn

        self._progress = RP(
            TextColumn("{task.description:<18}"),
            BarColumn(bar_width=16),
            TextColumn("{task.completed:>4.0f}/{task.total:<4.0f} kept"),
            TextColumn("{task.fields[generated]:>5} made"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("eta"),
            TimeRemainingColumn(compact=True),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._tasks: dict[str, int] = {}
        self._t0 = time.perf_counter()
        self._total_generated: dict[str, int] = {}

    def start(self, targets: dict[str, int]) -> None:
        self._progress.start()
        for cls, target in targets.items():
            name = cls if len(cls) <= 18 else cls[:17] + "…"
            self._tasks[cls] = self._progress.add_task(name, total=target, generated=0, rate="")

    def update(self, cls: str, generated: int, kept: int) -> None:
        self._total_generated[cls] = generated
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        rate = f"{sum(self._total_generated.values()) / elapsed:5.1f} img/s"
        self._progress.update(self._tasks[cls], completed=kept, generated=generated, rate=rate)

    def stop(self) -> None:
        self._progress.stop()


def make_progress(quiet: bool, json_mode: bool = False) -> Progress:
    """Nothing with ``--quiet``; plain lines (with a heartbeat) with ``--json`` or off a terminal; else a live table."""
    if quiet:
        return NullProgress()
    if sys.stderr.isatty() and not json_mode:
        return RichProgress()
    return LineProgress()
