"""Human-readable run summaries (rich tables)."""

from __future__ import annotations

from typing import Any


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if summary.get("already_complete"):
        console.print(f"[bold]{summary['out']}[/] already holds this run, finished; nothing to do.")
    table = Table(title="dalle-data generate", title_justify="left")
    for col in ("class", "target", "generated", "kept", "rejected", "acceptance", ""):
        table.add_column(col, justify="left" if col in ("class", "") else "right")
    for name, row in summary["classes"].items():
        status = "[green]done[/]" if row["met"] else f"[yellow]short by {row['target'] - row['kept']}[/]"
        table.add_row(name, str(row["target"]), str(row["generated"]), str(row["kept"]),
                      str(row["rejected"]), f"{row['acceptance']:.0%}", status)
    console.print(table)
    modes = ", ".join(f"{m}: {r['kept']}/{r['target']} kept of {r['generated']}" for m, r in summary["modes"].items())
    console.print(f"modes: {modes}")
    if summary.get("rejections"):
        console.print("rejected because: " + ", ".join(f"{k} ×{v}" for k, v in summary["rejections"].items()))
    stages = summary.get("stage_seconds", {})
    console.print(
        f"{summary['generated']} images in {summary['seconds']:.1f}s ({summary['images_per_second']:.2f} img/s; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()) + ")"
    )
    if not summary["complete"]:
        console.print("[yellow]Some quotas were not met within --max-attempts; raise it or loosen the filter.[/]")
    out = summary["out"]
    outputs = summary.get("outputs", {})
    if "parquet" in outputs:
        console.print(f"Parquet:     {outputs['parquet']}/   datasets.load_dataset('parquet', data_dir='{out}/parquet')")
    if "imagefolder" in outputs:
        console.print(f"ImageFolder: {outputs['imagefolder']}/   torchvision.datasets.ImageFolder('{outputs['imagefolder']}')")
