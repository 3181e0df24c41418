"""``dalle-data review``: put the lowest-scoring kept images in front of a person."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dalle_data.advice import review_command
from dalle_data.cli.common import cli_errors, epilog
from dalle_data.errors import SpecError

if TYPE_CHECKING:
    from dalle_data.review.apply import ApplyReport
    from dalle_data.review.session import ReviewSession

EPILOG = epilog(
    [
        f'{review_command("out", 50)}              # a local page: the likeliest wrong-class images first',
        'dalle-data review out --lowest-clip 50                 # the 50 lowest CLIP scores (drift from the prompt)',
        'dalle-data review out --lowest-clip 10 --per-class --random 20 --shuffle',
        'dalle-data review out --apply                          # write the decisions into the dataset',
        'dalle-data review out --apply --dry-run --json         # what --apply would change, for CI',
        'dalle-data review out --lowest-clip 100 --format table # the same selection, no server',
        'dalle-data review out --smallest-margin 40 --format table   # the scorer\'s boundary cases first',
        'dalle-data review out --lowest-prob 40 --per-class --format table',
        'dalle-data review out --disagree 40 --second-scorer tiny --format table   # where a second CLIP doubts',
        'dalle-data review out --duplicates --format table      # near-duplicate groups (dedup keeps the first)',
        'dalle-data review out --export-html sheet.html         # a contact sheet to share (images inlined)',
    ],
    'Orders: --smallest-margin finds wrong-class images soonest when the scorer is good (see benchmarks/review_orderings.py); --disagree with an independent scorer catches what the first scorer is blind to; --lowest-clip finds images that drifted from their prompt. Keys on the page: arrows move, a accept, r reject, l relabel (then 1-9), n hard negative, u undo. Decisions are saved as they are made in OUT/review/decisions.jsonl; --apply moves rejected images to OUT/rejected/, relabeled ones to their new class, and updates OUT/manifest.jsonl.',
)

_FLAGS = {"lowest": "--lowest-clip", "random": "--random", "seed": "--seed", "order": "--lowest-clip",
          "second_scorer": "--second-scorer", "threshold": "--threshold"}


def _open_session(out: Path, values: dict[str, Any]) -> ReviewSession:
    from pydantic import ValidationError

    from dalle_data.review.selection import SelectionOptions
    from dalle_data.review.session import ReviewSession

    try:
        opts = SelectionOptions(**values)
    except ValidationError as err:
        first = err.errors()[0]
        flag = _FLAGS.get(str(first["loc"][0]), "") if first.get("loc") else ""
        raise SpecError(f"{flag + ': ' if flag else ''}{str(first['msg']).removeprefix('Value error, ')}") from None
    return ReviewSession.open(out, opts)


def _print_table(session: ReviewSession) -> None:
    from rich.table import Table

    from dalle_data.cli.common import console as make_console

    progress = session.progress()
    table = Table(title=f"{session.run.out}: {session.opts.describe()}", title_justify="left")
    for col in ("#", "why", "class", "clip", "prob", "mode", "decision", "id", "prompt"):
        table.add_column(col, justify="right" if col in ("#", "clip", "prob") else "left", no_wrap=col != "prompt")
    for n, item in enumerate(session.items, 1):
        r, d = item.record, session.decision_of(item.record.id)
        decision = "" if d is None else (f"relabel → {d.label}" if d.action == "relabel" else d.action)
        why = item.why if item.why == "random" else session.opts.ordering.why
        table.add_row(str(n), f"{why} {item.rank}", r.label, "—" if r.clip_score is None else f"{r.clip_score:.4f}",
                      "—" if r.class_prob is None else f"{r.class_prob:.1%}", r.mode, decision, r.id, r.prompt)
    console = make_console()
    console.print(table)
    console.print(f"{progress['reviewed']} of {progress['total']} reviewed; {_decisions_where(session)}")


def _decisions_where(session: ReviewSession) -> str:
    """Where the decisions are, named only once there is a file (a path to nothing sends a user looking)."""
    return f"decisions in {session.log.path}" if session.log.path.is_file() else "no decisions yet"


def _listing_json(session: ReviewSession) -> dict[str, Any]:
    state = session.state_json()
    return {key: state[key] for key in ("out", "spec_hash", "selection", "kept", "progress", "decisions_file", "items")}


def _print_apply(report: ApplyReport, out: Path) -> None:
    counts = report.counts()
    if not report.changes:
        typer.echo(f"Nothing to apply: {out} already reflects all {report.decisions} decision(s) in force.")
        return
    verb = "Would apply" if report.dry_run else "Applied"
    typer.echo(f"{verb} review decisions to {out} ({report.decisions} in force, {len(report.changes)} change(s)):")
    moves: dict[str, int] = {}
    for change in report.changes:
        if change.kind in ("relabeled", "hard_negative"):
            key = f"{change.before.label} → {change.after.label}"
            moves[key] = moves.get(key, 0) + 1
    notes = {"rejected": f"moved to {out}/rejected/", "duplicate": f"near-duplicates (dedup), in {out}/rejected/",
             "restored": "back in the dataset as generated",
             "relabeled": ", ".join(f"{k} ×{v}" for k, v in moves.items()), "hard_negative": ""}
    for kind, count in counts.items():
        if count:
            typer.echo(f"  {kind.replace('_', ' '):<14}{count:>4}   {notes[kind]}".rstrip())
    if not report.dry_run:
        typer.echo(f"  files: {report.parquet_files} Parquet file(s) rewritten, {report.images_moved} image(s) moved, "
                   "metadata.jsonl and manifest.jsonl rebuilt")
    typer.echo("Kept now: " + ", ".join(f"{label} {n}" for label, n in report.kept.items()))


def _serve(session: ReviewSession, port: int, browser: bool) -> None:
    import signal

    from dalle_data.review.server import ReviewServer

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    server = ReviewServer(session, port=port)
    out = session.run.out
    # Ctrl-C and SIGTERM stop the server with the message below, also where SIGINT was ignored when this process
    # started (a shell's background job, nohup, some CI runners): Python then installs no handler of its own.
    # Installed before the URL is printed, so a signal sent as soon as it is read is caught.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        progress = session.progress()
        typer.echo(f"Reviewing {progress['total']} images of {out} ({session.opts.describe()}); "
                   f"{progress['reviewed']} already reviewed.")
        typer.echo(f"Open {server.url}")
        typer.echo(f"Every decision is saved at once in {session.log.path}. "
                   f"Stop with Ctrl-C, then: dalle-data review {out} --apply", err=True)
        if browser:
            import webbrowser

            webbrowser.open(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        progress = session.progress()
        if session.log.path.is_file():
            typer.echo(f"Stopped; {progress['reviewed']} of {progress['total']} reviewed, decisions kept in "
                       f"{session.log.path}. Apply them: dalle-data review {out} --apply", err=True)
        else:
            typer.echo(f"Stopped; {progress['reviewed']} of {progress['total']} reviewed, no decisions made.",
                       err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()


@cli_errors
def review(
    out: Path = typer.Argument(..., metavar="OUT", help="Output directory of a finished run."),
    lowest_clip: int | None = typer.Option(None, "--lowest-clip", metavar="N", show_default=False, help="Review the N kept images with the lowest CLIP score (0: none). [default: 50 when no other order is given]"),
    lowest_prob: int | None = typer.Option(None, "--lowest-prob", metavar="N", help="Review the N kept images the scorer is least sure are their label."),
    smallest_margin: int | None = typer.Option(None, "--smallest-margin", metavar="N", help="Review the N kept images whose label leads the runner-up label by the least."),
    disagree: int | None = typer.Option(None, "--disagree", metavar="N", help="With --second-scorer: the N images that scorer gives the lowest probability of their label."),
    second_scorer: str | None = typer.Option(None, "--second-scorer", metavar="NAME", help="An independent CLIP for --disagree (any --scorer name: ARCH/TAG, hf-hub:..., a folder, tiny)."),
    duplicates: bool = typer.Option(False, "--duplicates", help="Review the near-duplicate groups, group by group."),
    threshold: float = typer.Option(0.95, "--threshold", min=0.01, max=1.0, help="With --duplicates: the cosine at or above which images are near-duplicates."),
    per_class: bool = typer.Option(False, "--per-class", help="Take the N lowest of each class instead of overall."),
    random_k: int = typer.Option(0, "--random", metavar="K", help="Add K randomly sampled kept images as spot checks."),
    seed: int = typer.Option(0, "--seed", metavar="INT", help="Seed of the random sample (same seed, same sample)."),
    shuffle: bool = typer.Option(False, "--shuffle", help="Mix the random sample in, instead of its own section."),
    port: int = typer.Option(0, "--port", metavar="PORT", min=0, max=65535, show_default=False, help="Port on 127.0.0.1. [default: a free one]"),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the URL, do not open a browser."),
    apply: bool = typer.Option(False, "--apply", help="Write the saved decisions into the dataset, then exit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --apply: say what would change, change nothing."),
    fmt: str | None = typer.Option(None, "--format", "-f", metavar="FORMAT", help="table | json: list the selection without a server."),
    json_output: bool = typer.Option(False, "--json", help="JSON on stdout (same as --format json; with --apply, the apply report)."),
    export_html: Path | None = typer.Option(None, "--export-html", metavar="FILE", help="Write a self-contained HTML contact sheet of the selection."),
) -> None:
    """Review the lowest-scoring kept images in a local page; apply the decisions."""
    if fmt is not None and fmt not in ("table", "json"):
        raise SpecError(f"--format {fmt!r}: choose table or json")
    if dry_run and not apply:
        raise SpecError("--dry-run goes with --apply")
    if apply and (fmt or export_html):
        raise SpecError("--apply writes the decisions and exits; run --format / --export-html separately")
    if apply:
        from dalle_data.review.apply import apply_decisions
        from dalle_data.review.decisions import DecisionLog
        from dalle_data.review.run import DECISIONS_FILE, load_run

        run = load_run(out)  # apply finishes a cut-off apply itself, and reports it
        report = apply_decisions(run, DecisionLog(run.review_dir / DECISIONS_FILE, run.spec_hash), dry_run=dry_run)
        if report.changes and not dry_run:
            from dalle_data.report import refresh_report

            refresh_report(out)
        if json_output:
            typer.echo(json.dumps({"out": str(out), **report.as_json()}, indent=2, ensure_ascii=False))
        else:
            _print_apply(report, out)
        return
    from dalle_data.review.selection import ORDERINGS

    by_flag = {"--lowest-clip": lowest_clip, "--lowest-prob": lowest_prob, "--smallest-margin": smallest_margin,
               "--disagree": disagree, "--duplicates": 0 if duplicates else None}  # each ordering's option
    orders = {name: by_flag.get(o.flag) for name, o in ORDERINGS.items()}
    given = [name for name, n in orders.items() if n is not None]
    if len(given) > 1:
        raise SpecError(f"{ORDERINGS[given[0]].flag} and {ORDERINGS[given[1]].flag} are two orders; "
                        "review one at a time")
    order = given[0] if given else next(iter(ORDERINGS))
    n = orders[order] if given else 50
    session = _open_session(out, {"lowest": n, "order": order, "second_scorer": second_scorer,
                                  "threshold": threshold, "per_class": per_class, "random": random_k,
                                  "seed": seed, "shuffle": shuffle})
    if export_html is not None:
        from dalle_data.review.export import export_html as write_sheet

        path = write_sheet(session, export_html)
        typer.echo(f"Contact sheet of {len(session.items)} images written to {path}", err=True)
    if json_output or fmt == "json":
        typer.echo(json.dumps(_listing_json(session), indent=2, ensure_ascii=False))
    elif fmt == "table":
        _print_table(session)
    elif export_html is None:
        _serve(session, port, browser=not no_browser)
