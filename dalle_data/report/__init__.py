"""``dalle-data report OUT``: the dataset card, the visual report and their figures.

``build_report(OUT)`` reads the run (records as they are now, summary, stored
embeddings), computes the figures (``figures.compute``: counts, acceptance,
score histograms, diversity, near-duplicates, prompt coverage, warnings),
and writes, each atomically:

* ``OUT/README.md``            the dataset card (``card``), Hugging Face convention;
* ``OUT/report/index.html``    one self-contained page (``html``);
* ``OUT/report/report.json``   the figures (what ``report --json`` prints).

``generate`` calls it when a run ends, ``review --apply``, ``dedup`` and
``merge`` when they change the dataset. A run made before embeddings were kept
gets them computed here once (the scorer is loaded for it), through the same
per-shard files ``generate`` writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from dalle_data.analysis import DEFAULT_THRESHOLD
from dalle_data.planning import template_pack
from dalle_data.report import card as card_mod, figures as fig_mod, html as html_mod
from dalle_data.report.html import extremes
from dalle_data.review.apply import recover
from dalle_data.review.images import ImageStore, parquet_candidates, png_candidates
from dalle_data.review.run import review_run_of
from dalle_data.review.vectors import load_embeddings
from dalle_data.rundir.directory import atomic_write_text, read_json_object
from dalle_data.rundir.lock import RunLock
from dalle_data.rundir.reader import open_run
from dalle_data.writers.base import ensure_dir

log = logging.getLogger(__name__)


def rows_fingerprint(records: Any) -> str:
    """A digest of the dataset's rows (id, label, image hash): the card changes whenever they do."""
    kept = sorted((r for r in records if r.status == "kept"), key=lambda r: r.id)
    payload = "\n".join(f"{r.id}:{r.label_id}:{r.sha256}" for r in kept)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def run_versions(runlog: Path) -> dict[str, str]:
    """The library versions of the last start of the run (``runlog.jsonl``)."""
    versions: dict[str, str] = {}
    try:
        lines = runlog.read_text(encoding="utf-8").splitlines()
    except OSError:
        return versions
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "start" and isinstance(event.get("versions"), dict):
            versions = {str(k): str(v) for k, v in event["versions"].items()}
    return versions


def build_report(out: Path | str, *, threshold: float = DEFAULT_THRESHOLD, compute: bool = True,
                 write: bool = True, locked: bool = False, scorer: Any = None, fetch: Any = None) -> dict[str, Any]:
    """Figures of the run in ``out``; with ``write``, the card, page and JSON written too (see above).

    ``fetch(paths)``, when given, is called with the local paths the report is about to read (a remote
    run's mirror downloads those it lacks: the embeddings, then the images shown)."""
    out = Path(out)
    with nullcontext() if locked or not write else RunLock(out, "dalle-data report"):
        if not locked:  # a cut-off review --apply is finished first (commands do this, the reader does not)
            recover(out, locked=write)  # under the lock taken above when writing
        run = open_run(out)
        review_run = review_run_of(run)
        emb, computed, missing = load_embeddings(review_run, run.spec, compute=compute, scorer=scorer, fetch=fetch)
        if fetch is not None:  # the parts' text embeddings, on the object store (the look-alike check reads them)
            fetch([run.layout.vocabulary])
        probe = read_json_object(run.layout.probe_json)
        try:
            pack = template_pack(run.spec) if not run.spec.llm and not run.spec.prompts else None
        except Exception as err:  # noqa: BLE001 - a pack that moved away only costs the coverage table
            log.info("template pack not readable for the coverage table: %s", err)
            pack = None
        figures = fig_mod.compute(review_run, emb, pack=pack, threshold=threshold, probe=probe,
                                  missing_embeddings=missing)
        figures["embeddings"]["computed"] = computed
        if not write:
            return figures
        versions = run_versions(run.layout.runlog)
        records = list(review_run.records)
        shown = _shown(records, review_run.labels, figures)
        if fetch is not None:
            by_id = {r.id: r for r in records}
            fetch([p for i in sorted(shown) for p in png_candidates(review_run, i)
                   if p.parent.name == by_id[i].class_dir])
            fetch([p for shard in sorted({by_id[i].shard for i in shown}) for p in parquet_candidates(review_run, shard)])
        store = ImageStore(review_run, wanted=shown)
        made = [("classes", ", ".join(run.spec.classes)), ("generator", f"{run.spec.model} ({run.spec.backend})"),
                ("scorer", str(figures["embeddings"].get("scorer") or run.spec.scorer)),
                ("modes", ", ".join(f"{m} {s:.0%}" for m, s in run.spec.modes.items())),
                ("filter", run.spec.filter + (f", min CLIP {run.spec.min_clip}" if run.spec.min_clip is not None else "")),
                ("seed", str(run.spec.seed)), ("dalle-data", versions.get("dalle-data", figures["dalle_data_version"])),
                ("spec hash", run.spec_hash), ("command", "dalle-data generate --config spec.yaml (the spec.yaml of this run)")]
        page = html_mod.page("dalle-data report: " + ", ".join(run.spec.classes[:4])
                             + (f" and {len(run.spec.classes) - 4} more" if len(run.spec.classes) > 4 else ""), figures, records, review_run.labels,
                             lambda r: store.png(r) if r.id in shown else None, made)
        ensure_dir(run.layout.report_dir)
        atomic_write_text(run.layout.report_html, page)
        atomic_write_text(run.layout.report_json, json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(run.layout.dataset_card,
                          card_mod.card(run, figures, rows_fingerprint(records), versions))
        return figures


def refresh_report(out: Path | str, *, locked: bool = False, fetch: Any = None) -> bool:
    """Rewrite the card and report after the dataset changed; a failure only warns (the data is fine)."""
    try:
        build_report(out, locked=locked, fetch=fetch)
    except Exception as err:  # noqa: BLE001 - the report is a view of the data, never a reason to fail
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.warning("the report of %s was not written (%s); write it with `dalle-data report %s`", out, first, out)
        return False
    return True


def _shown(records: list[Any], labels: Any, figures: dict[str, Any]) -> set[str]:
    shown = {r.id for top, bottom in extremes(records, labels).values() for r in top + bottom}
    for group in figures["duplicates"]["groups"][:50]:
        shown.update([group["keep"], *group["set_aside"]][:12])
    return shown

