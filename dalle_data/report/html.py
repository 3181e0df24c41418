"""``OUT/report/index.html``: one self-contained page (no network, no script) to look at a run.

Plots are inline SVG drawn here (histograms need no plotting library, and SVG
stays sharp and small); images are ``data:`` URIs of thumbnails. The page is
built from the report's figures and the images' bytes only, and holds no
timestamp, so the same run gives the same page.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from typing import Any

from dalle_data.records import Record

THUMB = 96
GRID = 6  # highest- and lowest-scoring images shown per class
GLANCE = 2  # of those, shown per class at the top of the page
WARNINGS_SHOWN = 3  # warnings shown in full on the first screen; the rest one click away
_KEPT, _REJECTED = "#2e7d32", "#c62828"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1d1d1f;padding:0 16px}
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child,.text{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:8px 12px;margin:6px 0}
.ok{background:#edf7ed;border-left:4px solid #2e7d32;padding:8px 12px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:4px;margin-bottom:4px}.grid-label{font-size:12px;color:#555;margin:6px 0 2px}
figure{margin:0;width:96px;font-size:11px;text-align:center}
figure img{width:96px;height:96px;object-fit:cover;image-rendering:pixelated;border:1px solid #ccc}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.small{color:#666;font-size:12px}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def svg_histogram(edges: Sequence[float], kept: Sequence[int], rejected: Sequence[int], title: str,
                  width: int = 250, height: int = 90) -> str:
    """Kept (green) and rejected (red) counts per bin, side by side, with the axis range under it."""
    bins = len(kept)
    top = max([*kept, *rejected, 1])
    bar = (width - 2) / bins
    parts = [f'<svg width="{width}" height="{height + 16}" role="img" '
             f'aria-label="{esc(title)}"><title>{esc(title)}</title>',
             f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#999"/>']
    for i in range(bins):
        for k, (counts, colour) in enumerate(((kept, _KEPT), (rejected, _REJECTED))):
            if counts[i]:
                h = max(1.0, counts[i] / top * (height - 4))
                x = 1 + i * bar + k * bar / 2
                parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{bar / 2 - 0.5:.1f}" height="{h:.1f}" '
                             f'fill="{colour}"><title>{edges[i]:g}–{edges[i + 1]:g}: {counts[i]}</title></rect>')
    parts.append(f'<text x="0" y="{height + 13}" font-size="10">{edges[0]:g}</text>')
    parts.append(f'<text x="{width}" y="{height + 13}" font-size="10" text-anchor="end">{edges[-1]:g}</text>')
    parts.append(f'<text x="{width}" y="10" font-size="10" text-anchor="end">max {top}</text>')
    parts.append("</svg>")
    return "".join(parts)


def thumbnail_uri(data: bytes | None) -> str | None:
    """A small PNG ``data:`` URI of an image's bytes (None when they cannot be decoded)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB, THUMB))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=False)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def extremes(records: Sequence[Record], labels: Sequence[str]) -> dict[str, tuple[list[Record], list[Record]]]:
    """Per label (in ``labels`` order, those with kept scored images): its ``GRID`` highest-scoring kept images,
    and the ``GRID`` lowest not among them, highest first."""
    by_label: dict[str, list[Record]] = {}
    for r in records:
        if r.status == "kept" and r.clip_score is not None:
            by_label.setdefault(r.label, []).append(r)
    out = {}
    for label in labels:
        kept = sorted(by_label.get(label, []), key=lambda r: (-r.clip_score, r.id))  # type: ignore[operator]
        if kept:
            top = kept[:GRID]
            out[label] = (top, [r for r in kept[-GRID:] if r not in top])
    return out


def _figure(record: Record, png: Callable[[Record], bytes | None], named: bool = False) -> str:
    uri = thumbnail_uri(png(record))
    caption = f"{record.clip_score:.3f}" if record.clip_score is not None else "–"
    if named:
        caption = f"{record.label} · {caption}"
    tip = f"{record.id} · {record.mode} · clip {caption} · p {record.class_prob} · {record.prompt}"
    if uri is None:
        return f'<figure title="{esc(tip)}"><div class="small">(no image)</div>{esc(caption)}</figure>'
    return f'<figure title="{esc(tip)}"><img src="{uri}" alt="{esc(record.prompt)}">{esc(caption)}</figure>'


def page(title: str, figures: dict[str, Any], records: Sequence[Record], labels: Sequence[str],
         png: Callable[[Record], bytes | None], made: Sequence[tuple[str, str]]) -> str:
    """The whole page. ``png(record)`` gives an image's bytes; ``made`` the how-it-was-made rows."""
    out: list[str] = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
                      f"<h1>{esc(title)}</h1>"]
    grids = extremes(records, labels)
    # the first screen: what the images look like (each class's best-scoring kept images), then the warnings
    out.append('<section id="glance"><div class="grid">' + "".join(
        _figure(r, png, named=True) for top, _ in grids.values() for r in top[:GLANCE]) + "</div></section>")
    warnings = figures["warnings"]
    out.append('<section id="warnings"><h2>Warnings</h2>')
    out += [f'<div class="warn">{esc(w)}</div>' for w in warnings[:WARNINGS_SHOWN]] or [
        '<div class="ok">No warnings.</div>']
    if len(warnings) > WARNINGS_SHOWN:
        out.append(f"<details><summary>{len(warnings) - WARNINGS_SHOWN} more warning(s)</summary>"
                   + "".join(f'<div class="warn">{esc(w)}</div>' for w in warnings[WARNINGS_SHOWN:]) + "</details>")
    out.append("</section>")

    out.append('<section id="made"><h2>How it was made</h2><table>')
    out += [f"<tr><th>{esc(k)}</th><td class='text'>{esc(v)}</td></tr>" for k, v in made]
    out.append("</table></section>")

    div = {d["label"]: d for d in figures["diversity"]}
    out.append('<section id="classes"><h2>Classes</h2><table><tr><th>label</th><th>target</th><th>kept</th>'
               "<th>generated</th><th>rejected</th><th>failed</th><th>acceptance</th><th>Vendi</th>"
               "<th>Vendi@basis</th><th>mean distance</th><th>prompts</th></tr>")
    for label, row in figures["classes"].items():
        d = div.get(label, {})
        cells = [row["target"], row["kept"], row["generated"], row["rejected"], row["failed"],
                 f"{row['acceptance']:.0%}", _num(d.get("vendi"), 1),
                 f"{_num(d.get('vendi_at'), 1)} @ {d['basis']}" if d else "–",
                 _num(d.get("mean_distance"), 3), d.get("prompts", "–")]
        style = "" if row["met"] else ' style="color:#c62828"'
        out.append(f"<tr{style}><td>{esc(label)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</table><p class='small'>Vendi: the effective number of distinct images (exp of the entropy of "
               "the eigenvalues of the cosine-similarity matrix of the scorer's image embeddings); Vendi@basis "
               "compares classes on the same number of images. Mean distance: mean of 1 − cosine over all pairs."
               "</p></section>")

    out.append('<section id="histograms"><h2>Scores by class and mode</h2>'
               f'<p class="legend"><span style="background:{_KEPT}"></span>kept'
               f'<span style="background:{_REJECTED}"></span>rejected</p>')
    for name, what in (("clip_score", "CLIP cosine to the prompt"), ("class_prob", "zero-shot probability of the class")):
        hist = figures["histograms"][name]
        out.append(f"<h3>{esc(what)}</h3><div class='plots'>")
        for label, modes in hist["by"].items():
            for mode, counts in modes.items():
                title = f"{label} · {mode}"
                out.append(f"<div class='plot'>{esc(title)}<br>"
                           f"{svg_histogram(hist['edges'], counts['kept'], counts['rejected'], f'{what}: {title}')}</div>")
        out.append("</div>")
    out.append("</section>")

    out.append(f'<section id="images"><h2>Highest and lowest CLIP scores per class</h2>'
               f"<p class='small'>Kept images; the {GRID} highest then the {GRID} lowest, score under each.</p>")
    for label, (top, bottom) in grids.items():
        out.append(f"<h3>{esc(label)}</h3><p class='grid-label'>highest {len(top)}</p><div class='grid'>"
                   + "".join(_figure(r, png) for r in top) + "</div>")
        if bottom:
            out.append(f"<p class='grid-label'>lowest {len(bottom)}</p><div class='grid'>"
                       + "".join(_figure(r, png) for r in reversed(bottom)) + "</div>")
    out.append("</section>")

    cov = figures["coverage"]
    out.append('<section id="coverage"><h2>Prompt coverage</h2><table><tr><th>mode</th><th class="text">template</th>'
               "<th>used</th><th>kept</th></tr>")
    for row in cov["templates"]:
        out.append(f"<tr><td>{esc(row['mode'])}</td><td class='text'>{esc(row['template'] or row['source'])}"
                   f"</td><td>{row['used']}</td><td>{row['kept']}</td></tr>")
    out.append("</table>")
    for name, axis in cov["slots"].items():
        out.append(f"<h3>{esc(name)}: {axis['distinct']} of {axis['of']} values used, evenness {axis['evenness']:.2f}"
                   "</h3><table><tr><th>value</th><th>used</th><th>kept</th></tr>")
        out += [f"<tr><td>{esc(v)}</td><td>{c['used']}</td><td>{c['kept']}</td></tr>" for v, c in axis["values"].items()]
        out.append("</table>")
    out.append("</section>")

    dup = figures["duplicates"]
    by_id = {r.id: r for r in records}
    out.append(f'<section id="duplicates"><h2>Near-duplicates</h2><p>{len(dup["groups"])} group(s) at cosine ≥ '
               f"{dup['threshold']} (or the same bytes); keeping one image per group sets aside {dup['set_aside']} "
               f"({dup['share']:.1%}). <code>dalle-data dedup OUT</code> does it (undo: <code>--undo</code>).</p>")
    for group in dup["groups"][:50]:
        members = [by_id[i] for i in [group["keep"], *group["set_aside"]] if i in by_id]
        out.append(f"<h3>{esc(group['label'])} · {len(members)} images · "
                   f"{'identical' if group['exact'] else 'min cosine ' + format(group['min_similarity'], '.3f')}</h3>"
                   "<div class='grid'>" + "".join(_figure(r, png) for r in members[:12]) + "</div>")
    if len(dup["groups"]) > 50:
        out.append(f"<p class='small'>… and {len(dup['groups']) - 50} more (report.json lists them all).</p>")
    out.append("</section>")

    probe = figures.get("probe")
    if probe:
        out.append(probe_section(probe))
    out.append("</body></html>\n")
    return "\n".join(out)


def probe_section(probe: dict[str, Any]) -> str:
    """``dalle-data probe``'s results: the table, accuracy and worst group against synthetic images added,
    the most confused pairs, and the whole report as JSON (folded)."""
    import json

    seeds = probe.get("seeds", 1)
    head = (f"<p>{esc(probe.get('learner_detail', 'linear probe on ' + str(probe.get('scorer'))))}, tested on "
            f"{esc(probe.get('test_images'))} real images" + (f"; mean ± sd over {seeds} seeds" if seeds > 1 else "")
            + (f"; groups from {esc(probe['groups_source'])}" if probe.get("groups_source") else "") + ".</p>")
    rows = ["<table><tr><th>trained on</th><th>images</th><th>top-1</th><th>worst group</th><th>lowest group (mean)</th></tr>"]
    for name, row in probe.get("results", {}).items():
        worst = row.get("worst") or {}
        rows.append(f"<tr><td>{esc(name)}</td><td>{esc(row.get('train_images'))}</td>"
                    f"<td>{_pm(row.get('top1'), row.get('top1_sd'))}</td>"
                    f"<td>{_pm(row.get('worst_group'), row.get('worst_group_sd'))}</td>"
                    f"<td>{esc(worst.get('group', '–'))}"
                    + (f" {worst['accuracy']:.0%}" if isinstance(worst.get('accuracy'), (int, float)) else "")
                    + "</td></tr>")
    rows.append("</table>")
    curve = probe.get("curve") or []
    plot = f"<div>{svg_curve(curve)}</div>" if len(curve) > 1 else ""
    pairs = []
    results = [r for n, r in probe.get("results", {}).items() if n != "zero-shot"]
    if results and results[-1].get("confused_pairs"):
        pairs = ["<p>Most confused (" + esc(list(probe["results"])[len(results) - 1]) + "): "
                 + ", ".join(f"{esc(p['true'])} → {esc(p['predicted'])} ({p['count']}, {p['rate']:.0%})"
                             for p in results[-1]["confused_pairs"]) + "</p>"]
    raw = ("<details><summary>probe.json</summary><pre>" + esc(json.dumps(probe, indent=2, ensure_ascii=False))
           + "</pre></details>")
    return '<section id="probe"><h2>Probe</h2>' + head + "".join(rows) + plot + "".join(pairs) + raw + "</section>"


def svg_curve(points: Sequence[dict[str, Any]], width: int = 320, height: int = 160) -> str:
    """Top-1 (blue) and worst-group accuracy (orange) against synthetic images added, 0–100%."""
    series = [(key, colour, "", [(p["synthetic_images"], p[key], f"{p['setting']}: {key.replace('_', ' ')} {p[key]:.1%}")
                                 for p in points if p.get(key) is not None])
              for key, colour in (("top1", "#1f77b4"), ("worst_group", "#ff7f0e"))]
    return svg_lines(series, "accuracy (blue) and worst-group accuracy (orange) against synthetic images added",
                     "synthetic", width, height)


Series = tuple[str, str, str, list[tuple[float, float, str]]]  # name, colour, dash pattern, (x, y 0..1, tooltip)


def svg_lines(series: Sequence[Series], title: str, x_label: str, width: int = 320, height: int = 160) -> str:
    """Lines of 0–100% values against a count from 0, each point with a tooltip."""
    most = max((x for _, _, _, pts in series for x, _, _ in pts), default=0) or 1
    left, bottom = 30, height - 18

    def xy(x: float, y: float) -> tuple[float, float]:
        return left + x / most * (width - left - 8), bottom - y * (bottom - 8)

    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>',
             f'<line x1="{left}" y1="{bottom}" x2="{width}" y2="{bottom}" stroke="#999"/>',
             f'<line x1="{left}" y1="8" x2="{left}" y2="{bottom}" stroke="#999"/>',
             f'<text x="{left - 3}" y="12" font-size="10" text-anchor="end">100%</text>',
             f'<text x="{left - 3}" y="{bottom}" font-size="10" text-anchor="end">0%</text>',
             f'<text x="{left}" y="{height - 4}" font-size="10">0</text>',
             f'<text x="{width - 8}" y="{height - 4}" font-size="10" text-anchor="end">{most:g} {esc(x_label)}</text>']
    for _, colour, dash, pts in series:
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        if len(pts) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dashed} points="'
                         + " ".join("%.1f,%.1f" % xy(x, y) for x, y, _ in pts) + '"/>')
        for x, y, tip in pts:
            cx, cy = xy(x, y)
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{colour}"><title>{esc(tip)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def loop_page(state: dict[str, Any]) -> str:
    """``dalle-data loop``'s page: accuracy and worst-group accuracy against synthetic images, each arm
    (focused solid, uniform dashed), and every step's figures."""
    import json

    arms = state.get("arms", {})
    settings = state.get("settings", {})
    series: list[Series] = []
    for arm, dash in (("focused", ""), ("uniform", "5,4")):
        for key, colour in (("top1", "#1f77b4"), ("worst_group", "#ff7f0e")):
            pts = [(s["synthetic_images"], s[key], f"{arm} after round {s['round']}: {key.replace('_', ' ')} {s[key]:.1%}")
                   for s in arms.get(arm, []) if s.get(key) is not None]
            if pts:
                series.append((f"{arm} {key}", colour, dash, pts))
    out = ['<!doctype html><html lang="en"><head><meta charset="utf-8"><title>dalle-data loop</title>',
           f"<style>{CSS}</style></head><body><h1>dalle-data loop</h1>",
           f"<p>{esc(settings.get('rounds'))} rounds, {esc(settings.get('budget'))} synthetic images in all; learner "
           f"{esc(settings.get('learner'))}, measured on --test {esc(settings.get('test'))}, focused by its errors on "
           f"--val {esc(settings.get('val'))}.</p>",
           "<div>" + svg_lines(series, "top-1 (blue) and worst group (orange) against synthetic images; focused "
                               "solid, uniform dashed", "synthetic images", 480, 220) + "</div>",
           '<p class="small">blue: top-1; orange: worst group; solid: focused rounds; dashed: uniform rounds.</p>',
           "<table><tr><th>arm</th><th>after round</th><th>synthetic images</th><th>top-1</th><th>worst group</th>"
           "<th>lowest group</th></tr>"]
    for arm, steps in arms.items():
        for s in steps:
            worst = s.get("worst") or {}
            out.append(f"<tr><td>{esc(arm)}</td><td>{s['round']}</td><td>{s['synthetic_images']}</td>"
                       f"<td>{_pm(s.get('top1'), None)}</td><td>{_pm(s.get('worst_group'), None)}</td>"
                       f"<td>{esc(worst.get('group', '–'))}</td></tr>")
    out.append("</table><details><summary>loop.json</summary><pre>"
               + esc(json.dumps(state, indent=2, ensure_ascii=False)) + "</pre></details></body></html>\n")
    return "".join(out)


def _pm(value: Any, sd: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" + (f" ± {sd:.1%}" if sd else "")


def _num(value: Any, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
