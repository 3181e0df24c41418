"""Human-readable run summaries (rich tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    from dalle_data.cli.common import console as make_console
    from dalle_data.writers.formats import FORMATS

    console = make_console()
    if summary.get("already_finished"):
        how = "complete" if summary.get("complete") else "short (rerunning the same spec cannot do better)"
        if summary.get("repaired"):
            done = ", ".join(f"{n} {what}" for what, n in summary["repaired"].items())
            console.print(f"[bold]{summary['out']}[/] held this run, finished {how}, but damaged: repaired ({done}).")
        else:
            console.print(f"[bold]{summary['out']}[/] already holds this run, finished {how}; nothing to do.")
    table = Table(title="dalle-data generate", title_justify="left")
    for col in ("class", "target", "generated", "kept", "rejected", "failed", "acceptance", ""):
        table.add_column(col, justify="left" if col in ("class", "") else "right")
    for name, row in summary["classes"].items():
        status = "[green]done[/]" if row["met"] else f"[yellow]short by {row['target'] - row['kept']}[/]"
        table.add_row(name, str(row["target"]), str(row["generated"]), str(row["kept"]),
                      str(row["rejected"]), str(row.get("failed", 0)), f"{row['acceptance']:.0%}", status)
    console.print(table)
    modes = ", ".join(f"{m}: {r['kept']}/{r['target']} kept of {r['generated']}" for m, r in summary["modes"].items())
    console.print(f"modes: {modes}")
    for line in summary.get("focus", []):
        console.print(f"focus: {line}", soft_wrap=True)
    if summary.get("select"):
        console.print(f"select: {select_line(summary['select'])}", soft_wrap=True, markup=False)
    if summary.get("rejections"):
        console.print("not kept because: " + ", ".join(f"{k} ×{v}" for k, v in summary["rejections"].items()))
    stages = summary.get("stage_seconds", {})
    console.print(
        f"{summary['generated']} images in {summary['seconds']:.1f}s ({summary['images_per_second']:.2f} img/s, "
        f"batch {summary.get('batch_size', '?')}; busy: " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items())
        + (f"; generator busy {summary['generator_busy']:.0%} of the time" if "generator_busy" in summary else "")
        + ")"
    )
    if summary.get("utilisation"):
        console.print(utilisation_line(summary["utilisation"]), soft_wrap=True, markup=False)
    out = summary["out"]
    outputs = summary.get("outputs", {})
    for name, fmt in FORMATS.items():
        if name in outputs:
            console.print(f"{fmt.title + ':':<13}{outputs[name]}/   {fmt.loader(out, outputs[name])}", soft_wrap=True)
    for fmt, why in summary.get("missing_outputs", {}).items():
        console.print(f"{fmt}: {why}", soft_wrap=True)
    if outputs:
        console.print(f"Labels:      {summary.get('labels_file', out + '/labels.json')}   (id, label, folder, role: "
                      "the same ids in every format)", soft_wrap=True)
    report_json = Path(out) / "report" / "report.json"
    if outputs and report_json.is_file():
        try:
            warnings = json.loads(report_json.read_text(encoding="utf-8")).get("warnings", [])
        except (OSError, ValueError):
            warnings = []
        console.print(f"Report:      {out}/report/index.html   (card: {out}/README.md; {len(warnings)} warning(s)"
                      + (f", e.g. {warnings[0]}" if warnings else "") + ")", soft_wrap=True)


def select_line(sel: dict[str, Any]) -> str:
    """``--select``'s result in one line: how many candidates, how many kept, and what the learner made of each."""
    line = (f"{sel.get('learner')}: kept {sel.get('kept')} of {sel.get('passed')} candidates that passed the filter "
            f"({sel.get('candidates_per_image')} per image)")
    if sel.get("learner_prob_kept") is not None:
        line += f"; its mean p(label) {sel['learner_prob_kept']:.2f} on the kept"
        if sel.get("learner_prob_not_selected") is not None:
            line += f", {sel['learner_prob_not_selected']:.2f} on the rest"
    return line


STAGE_NAMES = {"prior": "prior", "text_encoder": "text encoder", "denoiser": "denoiser", "image_decoder": "image decoder"}


def utilisation_line(u: dict[str, Any]) -> str:
    """Where the generator's time went, in one line: each stage's GFLOP per image, rate and share of the limit."""
    parts = []
    for stage, row in u.get("stages", {}).items():
        text = f"{STAGE_NAMES.get(stage, stage)} {row['seconds']:.1f}s"
        if row.get("gflop_per_image") is not None:
            text += f", {row['gflop_per_image']:.3g} GFLOP/image"
        if row.get("gflop_per_s") is not None:
            text += f" at {row['gflop_per_s']:.3g} GFLOP/s"
            if row.get("share_of_limit") is not None:
                text += f" ({row['share_of_limit']:.0%})"
        parts.append(text)
    limit = f", matmul limit {u['limit_gflop_per_s']:.4g} GFLOP/s" if u.get("limit_gflop_per_s") else ""
    return f"generator ({u.get('device')}, {u.get('dtype')}{limit}): " + "; ".join(parts)
