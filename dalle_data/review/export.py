"""``review --export-html FILE``: a self-contained contact sheet of the selection.

One HTML file, images inlined as ``data:`` URIs, no script and no external
resource, so it can be mailed to someone without dalle-data. Each card shows
the image, its class, prompt, mode, CLIP score, class probability, lineage
(source thumbnails inlined) and the decision taken so far. Every text is
HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from pathlib import Path

from dalle_data.review.images import ImageStore
from dalle_data.review.selection import Item
from dalle_data.review.session import ReviewSession
from dalle_data.writers.base import atomic_write_bytes, ensure_dir

_CSS = """
body{margin:0;padding:24px;background:#0f1115;color:#e6e8ee;font:14px/1.45 system-ui,sans-serif}
h1{margin:0 0 4px;font-size:22px} .sub{color:#9aa3b2;margin-bottom:20px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:16px}
.card{background:#171a21;border:1px solid #2a2f3a;border-radius:10px;overflow:hidden;display:flex;flex-direction:column}
.card>img{width:100%;aspect-ratio:1;object-fit:contain;background:#000;image-rendering:pixelated}
.body{padding:10px 12px;display:flex;flex-direction:column;gap:6px}
.label{font-weight:700;font-size:16px} .muted{color:#9aa3b2;font-size:12px}
.prompt{font-style:italic} .src{display:flex;gap:6px;align-items:center} .src img{width:48px;height:48px;object-fit:cover;border-radius:4px}
.d{display:inline-block;padding:1px 8px;border-radius:999px;font-weight:700;font-size:12px;color:#fff;background:#3a4150}
.accept{background:#2ea043}.reject{background:#f85149}.relabel{background:#4c9aff}.hard_negative{background:#b482ff}
"""
_DECISION = {"accept": "accepted", "reject": "rejected", "hard_negative": "hard negative"}


def _data_uri(data: bytes | None) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii") if data else ""


def _card(session: ReviewSession, store: ImageStore, item: Item) -> str:
    r, esc = item.record, html.escape
    decision = session.decision_of(r.id)
    if decision is None:
        badge = '<span class="d">not reviewed</span>'
    else:
        text = f"→ {decision.label}" if decision.action == "relabel" else _DECISION[decision.action]
        badge = f'<span class="d {esc(decision.action)}">{esc(text)}</span>'
    why = f"random spot check #{item.rank}" if item.why == "random" else f"{session.opts.title} #{item.rank}"
    role = f" · hard negative, imitates {esc(r.imitates or '')}" if r.role == "hard_negative" else ""
    sources = ""
    if r.source_path:
        thumbs = "".join(f'<img alt="source" src="{_data_uri(store.thumbnail(r, n))}">'
                         for n in (1, 2) if (r.source_path if n == 1 else r.source2_path))
        sources = f'<div class="src">{thumbs}<span class="muted">{esc(r.mode)} of {esc(r.source_path)}</span></div>'
    score = "—" if r.clip_score is None else f"{r.clip_score:.4f}"
    prob = "—" if r.class_prob is None else f"{r.class_prob:.1%}"
    return (
        f'<div class="card"><img alt="{esc(r.prompt)}" src="{_data_uri(store.png(r))}"><div class="body">'
        f'<div><span class="label">{esc(r.label)}</span><span class="muted">{role}</span></div>'
        f'<div class="prompt">“{esc(r.prompt)}”</div>'
        f'<div class="muted">{esc(r.mode)} · CLIP {score} · class prob. {prob} · top {esc(r.top_class or "—")}</div>'
        f"{sources}<div>{badge} <span class=\"muted\">{esc(why)} · {esc(r.id)}</span></div></div></div>"
    )


def contact_sheet(session: ReviewSession) -> str:
    """The whole HTML document."""
    store, run, esc = ImageStore(session.run, wanted=session.by_id), session.run, html.escape
    progress = session.progress()
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cards = "\n".join(_card(session, store, item) for item in session.items)
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>dalle-data review · {esc(run.out.resolve().name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>dalle-data review · {esc(run.out.resolve().name)}</h1>"
        f'<div class="sub">{esc(session.opts.describe())} · {len(session.items)} images · '
        f"{progress['reviewed']} reviewed · classes: {esc(', '.join(run.classes))} · made {made}</div>"
        f'<div class="grid">{cards}</div></body></html>\n'
    )


def export_html(session: ReviewSession, path: Path) -> Path:
    """Write the contact sheet to ``path`` atomically; returns the path."""
    path = Path(path)
    ensure_dir(path.parent if str(path.parent) else Path("."))
    atomic_write_bytes(path, contact_sheet(session).encode("utf-8"))
    return path
