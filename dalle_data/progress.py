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


class LineProgress(NullProgress):
    """One line per round on stderr: for CI logs and other non-terminals."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def round_done(self, round_no: int, generated: int, kept: int) -> None:
        rate = generated / max(time.perf_counter() - self._t0, 1e-9)
        acc = kept / generated if generated else 0.0
        print(
            f"round {round_no}: generated {generated}, kept {kept} ({acc:.0%}), {rate:.2f} img/s",
            file=sys.stderr, flush=True,
        )


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


def make_progress(quiet: bool) -> Progress:
    if quiet:
        return NullProgress()
    if sys.stderr.isatty():
        return RichProgress()
    return LineProgress()
