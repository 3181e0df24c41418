"""What every command shares: turning errors into one line, logging setup."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from dalle_data.errors import DalleDataError, SpecError

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_ENV = "DALLE_DATA_DEBUG"


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def cli_errors(func: F) -> F:
    """Errors become one line on stderr and a non-zero exit; a traceback only
    when DALLE_DATA_DEBUG is set."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(os.environ.get(DEBUG_ENV))
        logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:  # `dalle-data prompts ... | head`: the reader has what it wanted
            quiet_broken_pipe()
            raise typer.Exit(0) from None
        except DalleDataError as err:
            if debug:
                raise
            raise fail(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("error: stopped at once; finished shards are kept. Rerun the same command to resume", err=True)
            raise typer.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - the CLI edge: never a bare traceback
            if debug:
                raise
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise fail(f"internal error: {type(err).__name__}: {first} (set {DEBUG_ENV}=1 for the traceback)", 1) from None

    return wrapper  # type: ignore[return-value]


def epilog(examples: list[str], notes: str = "") -> str:
    """A command's help epilog: examples kept one per line whatever the terminal width (click's \\b),
    then notes as a paragraph. The README test runs every example line."""
    text = "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in examples)
    return text + (f"\n\n{notes}" if notes else "")


def quiet_broken_pipe() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def split_list(values: list[str] | None) -> list[str]:
    """Repeatable options that also accept comma-separated lists."""
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in value.split(","))
    return out


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False) -> Any:
    """A rich console for tables and notes: the terminal's width on a TTY; off one (CI logs, pipes)
    nothing is wrapped or truncated, so commands stay on one line and figures stay whole."""
    from rich.console import Console

    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(highlight=False, stderr=stderr, width=None if tty else 10_000, soft_wrap=not tty)


def open_a_run(out: Path, what: str = "") -> Any:
    """The run in ``out``, read after finishing a cut-off ``review --apply`` (commands do this, the reader
    does not); not a run is a one-line ``SpecError`` (``what``: the option that named it, such as ``--train``)."""
    from dalle_data.errors import OutputDirError
    from dalle_data.review.apply import recover
    from dalle_data.rundir import open_run

    try:
        recover(out)
        return open_run(out)
    except OutputDirError as err:
        raise SpecError(f"{what + ' ' if what else ''}{out}: {err}") from None
