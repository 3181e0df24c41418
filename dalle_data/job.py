"""The ``generate`` job: from a validated spec to a finished run directory.

Order matters for "nothing half-done": everything that can fail because of
the user's input (prompts, names, the output directory, the models) is
checked before the output directory is created or touched.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data import __version__
from dalle_data.analysis.lookalike import save_vocabulary, vocabulary_for
from dalle_data.backends import BACKENDS, capable_hint
from dalle_data.config import RunSpec, dump_spec
from dalle_data.device import resolve_device
from dalle_data.errors import OutputDirError, SpecError
from dalle_data.execution.driver import Interrupted
from dalle_data.execution.executors import executor_kind
from dalle_data.execution.parts import Part
from dalle_data.execution.run import default_writers, regenerate as redo, run
from dalle_data.demo.world import CLASSES as WORLD_CLASSES
from dalle_data.generators.base import capabilities_of
from dalle_data.generators.registry import check_model_name
from dalle_data.hub import check_offline
from dalle_data.llm import make_writer
from dalle_data.llm.cancel import RequestsCancelled, cancel_requests, reset_cancel
from dalle_data.llm.writer import PER_REQUEST
from dalle_data.merge import merge
from dalle_data.focus import describe as describe_focus
from dalle_data.modes import MODES
from dalle_data.planning import Plan, _source_counts, check_focus_slots, plan, prompt_modes, template_pack
from dalle_data.progress import Progress, make_progress
from dalle_data.remote import is_url, local_path
from dalle_data.report import refresh_report
from dalle_data.review.apply import recover
from dalle_data.rundir import RunDir
from dalle_data.scoring import load_scorer
from dalle_data.scoring.learner import learner_of
from dalle_data.scoring.vocabulary import negatives_for
from dalle_data.scoring.registry import check_scorer_name, hub_pieces as scorer_pieces, resolve_scorer_name
from dalle_data.rundir.shards import ShardStore
from dalle_data.verify import quick_check, repair_locked
from dalle_data.writers.parquet import ParquetWriter, renumber

if TYPE_CHECKING:
    from dalle_data.execution.stages import Scorer
    from dalle_data.generators.base import Generator
    from dalle_data.writers import Writer

log = logging.getLogger(__name__)


def run_generate(
    spec: RunSpec,
    *,
    quiet: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    generator: Generator | None = None,
    scorer: Scorer | None = None,
    writers: list[Writer] | None = None,
    llm_cache: bool = True,
    part: Part | None = None,
    mirror: Any = None,
) -> dict[str, Any]:
    """Run, resume or find finished the job for ``spec`` (or one part of it); returns the summary.

    Without ``part``, an OUT that holds the parts of a sharded run of the same spec is merged.

    SIGINT / SIGTERM stop the run between batches (the shard in flight is
    abandoned, finished ones stay); a second signal stops at once. Either way
    no file is left half-written, and rerunning resumes. ``llm_cache=False``
    (``--no-cache``) asks the LLM afresh instead of reusing its cached answers.
    """
    executor_kind(spec.executor)  # an unknown name fails before anything is touched
    finish_source_apply(spec.from_dir)
    the_plan = plan(spec, llm_cache=llm_cache, part=part)
    rundir = RunDir(spec.out, spec.split, part)
    rundir.open()  # the run lock: a second process fails here at once
    started = False
    try:
        state = rundir.check(spec.content_dict(), the_plan.spec_hash, overwrite=overwrite)
        if part is None and rundir.parts() and not overwrite:
            summary = merge(spec.out, locked=True)
            write_report(spec.out, mirror)
            if mirror is not None:
                mirror.push_run(rundir.layout)
            summary["already_finished"] = True
            return summary
        if state in ("complete", "short") and part is not None and not _part_intact(rundir, part):
            log.warning("part %s of %s ended, but shard markers it made are missing; redoing those shards",
                        part, spec.out)
            rundir.unfinish()
            state = "incomplete"
        if state in ("complete", "short"):
            if part is not None:
                return {**(rundir.saved_summary() or {}), "already_finished": True}
            if mirror is not None:  # its files are on the object store, not here: nothing to check locally
                return {**(rundir.saved_summary() or {}), "already_finished": True,
                        "already_complete": bool((rundir.saved_summary() or {}).get("complete"))}
            return finished_summary(rundir, the_plan)
        generator, scorer = _load_models(spec, the_plan, generator, scorer)
        started = True
        # only once the new run can start: --overwrite deletes (only what runs wrote) as the run claims OUT
        rundir.prepare(dump_spec(spec, the_plan.spec_hash, __version__, the_plan.inputs), the_plan.spec_hash,
                       spec.content_dict(), the_plan.inputs, the_plan.label_map.to_text(the_plan.spec_hash),
                       overwrite=overwrite)
        if mirror is not None:  # the run's identity goes first: a rerun elsewhere finds it even after a kill
            layout = rundir.layout
            mirror.push([layout.run, layout.spec, layout.labels])
        if state == "incomplete":  # a resumed run: its finished Parquet parts numbered as the label map says
            # (made before labels.json, they numbered labels in the order given) and with today's columns
            for writer in default_writers(spec, the_plan):
                if isinstance(writer, ParquetWriter):
                    renumber(writer.ctx)
        summary = _run_logged(spec, the_plan, rundir, state, generator, scorer, writers,
                              progress or make_progress(quiet), mirror)
        keep_vocabulary(spec, rundir.layout, scorer)
        if part is None:
            write_report(spec.out, mirror)
        if mirror is not None:
            mirror.push_run(rundir.layout, rundir.home if part is not None else None)
        return summary
    finally:
        rundir.close(failed_before_start=not started)


def finish_source_apply(from_dir: str | None) -> None:
    """``--from`` an earlier run whose ``review --apply`` was cut off: that apply is finished (or undone)
    first, as every command that opens a run does (reading a run, as planning does, changes nothing)."""
    if from_dir and not is_url(from_dir):
        root = Path(local_path(from_dir)).expanduser()
        if (root / "spec.yaml").is_file():
            recover(root)


def _part_intact(rundir: RunDir, part: Part) -> bool:
    """Whether a finished part's markers still hold every record its summary counts (none was deleted)."""
    made = sum(len(ids) for shard, ids in ShardStore(rundir.layout).recorded().items() if Part.of_shard(shard) == part)
    return made >= int((rundir.saved_summary() or {}).get("generated", 0))


def write_report(out: Any, mirror: Any = None) -> bool:
    """The dataset card and report of a run that just ended (under its lock); a failure only warns. A remote
    run's mirror fetches the embeddings and shown images that other machines made."""
    return refresh_report(out, locked=True, fetch=mirror.fetch if mirror is not None else None)


def _run_logged(
    spec: RunSpec, the_plan: Plan, rundir: RunDir, state: str, generator: Any, scorer: Any,
    writers: list[Writer] | None, progress: Progress, mirror: Any = None,
) -> dict[str, Any]:
    """The run between its start and end lines in the run log; the summary is written last."""
    rundir.log({"event": "start", "time": _now(), "spec_hash": the_plan.spec_hash, "resumed": state == "incomplete",
                "model": generator.model, "scorer": scorer.name, "versions": versions()})
    status = "failed"
    reset_cancel()
    try:
        with stop_on_signals() as stop:
            summary = run(spec, the_plan, generator, scorer, writers, progress, stop, mirror)
        status = "complete" if summary["complete"] else "finished short"
    except (Interrupted, RequestsCancelled):
        status = "interrupted"
        raise Interrupted(
            f"interrupted; finished shards are kept in {spec.out}. Rerun the same command "
            f"(or `dalle-data generate --resume {spec.out}`) to continue"
        ) from None
    finally:
        with contextlib.suppress(Exception):  # a full disk must not hide the real error
            rundir.log({"event": "end", "time": _now(), "status": status})
        if hasattr(generator, "shutdown"):  # a Ray actor pool
            with contextlib.suppress(Exception):
                generator.shutdown()
    rundir.finish(summary)
    return summary


def finished_summary(rundir: RunDir, the_plan: Plan) -> dict[str, Any]:
    """The saved summary of a run that already ended, after a cheap check that its files are all there."""
    summary = rundir.saved_summary() or {}
    problems = quick_check(rundir.path)
    if problems:
        log.warning("%s holds this run finished, but damaged (%s%s); repairing it", rundir.path, problems[0],
                    f"; and {len(problems) - 1} more" if len(problems) > 1 else "")
        report = repair_locked(rundir.path, lambda run, shards: regenerate(the_plan.spec, shards))
        if not report.ok:
            raise OutputDirError(f"{rundir.path} is damaged and could not be fully repaired "
                                 f"({report.findings[0].what}); see `dalle-data verify {rundir.path}`")
        summary = rundir.saved_summary() or summary
        summary["repaired"] = report.repaired
    summary["already_finished"] = True
    summary["already_complete"] = bool(summary.get("complete"))
    return summary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions that decide what a run produces, for the run log."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"dalle-data": __version__}
    for dist in ("torch", "diffusers", "transformers", "open-clip-torch", "openai"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """First SIGINT/SIGTERM: finish the batch in flight, then stop. Second: stop at once."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        cancel_requests()  # hosted-API requests in flight stop now instead of when the server answers
        for sig in previous:  # a second signal acts at once
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        print("stopping after the current batch (press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def keep_vocabulary(spec: RunSpec, layout: Any, scorer: Any) -> None:
    """The scorer's text embeddings of a wider vocabulary than the run's classes (``analysis.lookalike``): the
    report finds there the classes the model drew as something else. Only with a scorer in this process (not
    on Ray, not for a hosted scorer); a failure only costs the warning."""
    if not hasattr(scorer, "label_embeddings"):
        return
    # a model whose world is known is asked about that world; another, about the generic negative vocabulary
    known = list(WORLD_CLASSES) if spec.model == "shapes-demo" else []
    names = vocabulary_for(list(spec.classes), known, [] if known else negatives_for(list(spec.classes)))
    try:
        rows = scorer.label_embeddings(names).float().cpu().numpy()
        save_vocabulary(layout.vocabulary, names, rows, str(scorer.name))
    except Exception as err:  # noqa: BLE001 - the run is made; only the look-alike warning is lost
        log.warning("the wider vocabulary was not embedded (%s): the report cannot say which classes look like "
                    "something else", err)


def load_models(spec: RunSpec) -> tuple[Any, Any]:
    """The generator and scorer ``spec`` runs with, to give ``run_generate`` for several runs of one model
    (``dalle-data loop``'s rounds) instead of loading them for each."""
    return _load_models(spec, plan(spec), None, None)


def _load_models(spec: RunSpec, the_plan: Plan, generator: Generator | None, scorer: Scorer | None) -> tuple[Any, Any]:
    """The generator and the scorer, checked before anything heavy is loaded; each can be given instead."""
    chosen = BACKENDS[spec.backend]
    scorer_name = resolve_scorer_name(spec.scorer, spec.model, spec.backend)
    remote = executor_kind(spec.executor).load_models
    if remote is not None and generator is None and scorer is None:
        check_model_name(spec.model) if chosen.needs_device else None
        models = remote(spec, the_plan.zero_shot_labels())  # the models load in the executor's workers, not here
        _check_capabilities(spec, models)
        return models, models
    if generator is None and not chosen.needs_device:
        generator = chosen.load(spec, "cpu")  # no weights: checks the key and URL before any heavy load
    if generator is None:
        check_model_name(spec.model)
    if scorer is None:
        check_scorer_name(scorer_name)
    _check_offline(spec, scorer_name, generator is None, scorer is None)
    if generator is None or scorer is None:
        device = resolve_device(spec.device)
        if generator is None:
            generator = chosen.load(spec, device)
        if scorer is None:
            scorer = load_scorer(scorer_name, device=device)
    _check_capabilities(spec, generator)
    scorer.set_labels(the_plan.zero_shot_labels())
    return generator, scorer


def _check_capabilities(spec: RunSpec, generator: Any) -> None:
    """A mode the loaded model cannot make is refused before any generation, naming what it can do and, from
    the backend records, which models or backends can (``Backend.capable_models``)."""
    can = capabilities_of(generator)
    missing = [m for m in spec.modes if MODES[m].capability not in can]
    if missing:
        raise SpecError(f"model {generator.model!r} cannot do {missing[0]} (it can: "
                        f"{', '.join(sorted(can))}); for {missing[0]} use "
                        f"{capable_hint(MODES[missing[0]].capability)}, or choose another mode")


def _check_offline(spec: RunSpec, scorer_name: str, generator: bool, scorer: bool) -> None:
    """Without a network, name every model piece missing from the local cache at once (not one per try)."""
    pieces = BACKENDS[spec.backend].hub_pieces(spec) if generator else []
    if scorer:
        pieces += scorer_pieces(scorer_name)
    if pieces:
        check_offline(pieces)


def regenerate(spec: RunSpec, shards: set[str], *, generator: Any = None, scorer: Any = None) -> dict[str, bytes]:
    """Redo ``shards`` of a run in memory, as the first time (``verify --repair``): image bytes by id.

    A sharded run's shards are redone with their own part's plan (``p0001of0002-…``: part 1/2)."""
    by_part: dict[Part | None, set[str]] = {}
    for shard in shards:
        by_part.setdefault(Part.of_shard(shard), set()).add(shard)
    saved = RunDir(spec.out, spec.split).saved_hash()
    finish_source_apply(spec.from_dir)  # its sources as the run saw them
    images: dict[str, bytes] = {}
    for part, some in sorted(by_part.items(), key=lambda item: str(item[0])):
        the_plan = plan(spec, part=part)
        if saved is not None and the_plan.spec_hash != saved:
            raise OutputDirError(f"{spec.out} was made from other inputs than are here now (its template pack, "
                                 "prompts file, LLM prompts, source images or --select learner changed): its lost images cannot be "
                                 "made again")
        generator, scorer = _load_models(spec, the_plan, generator, scorer)
        images.update(redo(spec, the_plan, generator, scorer, some))
    return images


def regenerate_shards(run: Any, shards: set[str]) -> dict[str, bytes]:
    """Redo ``shards`` of an opened run in memory (the same plan, seeds and batches); their image bytes by id
    (what ``verify --repair`` is given: verify checks and mends, generating is this layer's)."""
    return regenerate(run.spec, shards)


def dry_run(spec: RunSpec, *, price_per_image: float | None = None, llm_cache: bool = True) -> dict[str, Any]:
    """What ``spec`` would make and cost, without loading a model or making a request."""
    executor_kind(spec.executor)  # an unknown executor is refused here too, as by the run
    _, counts = _source_counts(spec)
    targets = spec.slot_targets(counts)
    images, most = sum(t for t, _ in targets.values()), sum(b for _, b in targets.values())
    out: dict[str, Any] = {
        "dry_run": True, "out": str(spec.out), "backend": spec.backend, "model": spec.model,
        "classes": list(spec.classes), "modes": dict(spec.modes), "options": dict(spec.options),
        "slots": [{"class": c, "mode": m, "target": t, "max_attempts": b} for (c, m), (t, b) in targets.items()],
        "images": {"target": images, "max": most},
    }
    least = images * (spec.candidates if spec.select is not None else 1)  # --select: K candidates per kept image
    if spec.select is not None:
        out["images"]["least"] = least
    out.update(BACKENDS[spec.backend].cost(spec, least, most, price_per_image))
    if spec.focus is not None:
        check_focus_slots(spec.focus, template_pack(spec), prompt_modes(spec))
        out["focus"] = describe_focus(spec.focus, list(spec.classes), spec.per_class or 0)
    learner = learner_of(spec)  # --select: the model checked as the run would, its classes against the run's
    if learner is not None:
        out["select"] = {"method": spec.select, "learner": learner.describe(), "candidates_per_image": spec.candidates,
                         "line": f"keeps 1 in {spec.candidates} of the candidates the filter passes: those "
                                 f"{learner.describe()} is least sure of"}
    if spec.llm is not None:
        writer = make_writer(spec.llm, base_url=spec.llm_base_url, seed=spec.seed, cache=llm_cache)
        missing = [c for c in spec.classes if not writer.cached(c, spec.llm_prompts)]
        per_class = -(-spec.llm_prompts // PER_REQUEST)
        out["llm"] = {"model": spec.llm, "base_url": writer.endpoint.url, "prompts_per_class": spec.llm_prompts,
                      "classes_cached": len(spec.classes) - len(missing),
                      "requests_at_least": per_class * len(missing)}
    return out
