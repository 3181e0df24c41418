"""The ``generate`` job: from a validated spec to a finished run directory.

Order matters for "nothing half-done": everything that can fail because of
the user's input (prompts, names, the output directory, the models) is
checked before the output directory is created or touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data import __version__
from dalle_data.config import TEXT_MODES, RunSpec, dump_spec
from dalle_data.errors import OutputDirError, SpecError
from dalle_data.labels import LabelMap
from dalle_data.planning import Slot, build_slots
from dalle_data.progress import Progress, make_progress
from dalle_data.prompts import PromptItem, expand_prompts, load_pack, read_prompts_jsonl
from dalle_data.rundir import Layout, RunDir, labels_for
from dalle_data.runner import Interrupted
from dalle_data.shards import ShardStore
from dalle_data.scoring.vocabulary import negatives_for
from dalle_data.sources import Source, discover_sources, sources_digest

if TYPE_CHECKING:
    from dalle_data.generators.base import Generator
    from dalle_data.runner import Scorer
    from dalle_data.writers import Writer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What a spec asks for, before any model is loaded."""

    spec: RunSpec
    label_map: LabelMap  # the one label map: ids in sorted folder order (see dalle_data.labels)
    prompts: list[PromptItem]
    inputs: dict[str, str]  # digests of input files, part of the spec hash
    sources: tuple[Source, ...] = ()

    @property
    def spec_hash(self) -> str:
        return self.spec.spec_hash(self.inputs)

    @property
    def labels(self) -> tuple[str, ...]:
        """ClassLabel names in id order."""
        return self.label_map.names

    def slots(self) -> list[Slot]:
        return build_slots(self.spec, self.prompts, self.label_map, self.sources)

    def zero_shot_labels(self) -> list[str]:
        """The run's classes, plus the negative vocabulary when one class alone
        cannot lose (a single class) or hard negatives need somewhere to go."""
        classes = list(self.spec.classes)
        if len(classes) == 1 or "adversarial" in self.spec.modes:
            classes += negatives_for(classes)
        return classes


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _text_prompts(
    spec: RunSpec, text_modes: list[str], counts: dict[str, int], llm_cache: bool = True
) -> tuple[list[PromptItem], dict[str, str]]:
    """Prompts for the text modes, and for inpainting (the vanilla scenes: "A cat on a beach")."""
    wanted = text_modes + (["vanilla"] if "inpaint" in spec.modes and "vanilla" not in text_modes else [])
    if spec.llm is not None and "vanilla" in wanted:
        return _llm_prompts(spec, [m for m in wanted if m != "vanilla"], counts, llm_cache)
    if spec.prompts:
        path = Path(spec.prompts)
        items = read_prompts_jsonl(path)
        unknown = sorted({i.cls for i in items} - set(spec.classes))
        if unknown:
            raise SpecError(f"prompts file {path} has class {unknown[0]!r}, which is not in --classes")
        return [i for i in items if i.mode in wanted], {"prompts": _file_digest(path)}
    if not wanted:
        return [], {}
    pack = _pack(spec)
    n = max(budget for _, budget in spec.slot_targets(counts).values())
    return expand_prompts(pack, list(spec.classes), wanted, n, spec.seed), {"templates": pack.digest}


def _pack(spec: RunSpec) -> Any:
    """``--templates``, else the pack the model preset is meant for (shapes-demo: templates/shapes.yaml)."""
    from dalle_data.generators.registry import default_templates

    return load_pack(spec.templates or default_templates(spec.model))


def _llm_prompts(
    spec: RunSpec, template_modes: list[str], counts: dict[str, int], llm_cache: bool
) -> tuple[list[PromptItem], dict[str, str]]:
    """Vanilla scenes written by ``--llm`` (their digest joins the spec hash), other modes from templates."""
    from dalle_data.llm import write_llm_prompts

    assert spec.llm is not None
    items = write_llm_prompts(spec.llm, list(spec.classes), spec.llm_prompts, base_url=spec.llm_base_url,
                              seed=spec.seed, cache=llm_cache, timeout=spec.timeout, max_retries=spec.max_retries)
    blob = "\n".join(f"{i.cls}\t{i.prompt}" for i in items).encode("utf-8")
    inputs = {"llm": hashlib.sha256(blob).hexdigest()[:16]}
    if template_modes:
        pack = _pack(spec)
        n = max(budget for _, budget in spec.slot_targets(counts).values())
        items += expand_prompts(pack, list(spec.classes), template_modes, n, spec.seed)
        inputs["templates"] = pack.digest
    return items, inputs


def _source_counts(spec: RunSpec) -> tuple[list[Source], dict[str, int]]:
    if spec.mask_dir and not Path(spec.mask_dir).expanduser().is_dir():
        raise SpecError(f"--mask-dir {spec.mask_dir}: no such directory")
    sources = discover_sources(spec.from_dir, list(spec.classes)) if spec.from_dir else []
    counts: dict[str, int] = {}
    for source in sources:
        counts[source.label] = counts.get(source.label, 0) + 1
    return sources, counts


def plan(spec: RunSpec, *, llm_cache: bool = True) -> Plan:
    """Expand prompts, list sources, name folders; raises ``SpecError`` on bad input.

    With ``--llm`` this asks the LLM for the scene prompts (or reads its cache).
    """
    sources, counts = _source_counts(spec)
    text_modes = [m for m in spec.modes if m in TEXT_MODES]
    items, inputs = _text_prompts(spec, text_modes, counts, llm_cache)
    if "inpaint" in spec.modes:
        items += [PromptItem(i.cls, "inpaint", i.prompt, i.source) for i in items if i.mode == "vanilla"]
    if sources:
        inputs["sources"] = sources_digest(sources)
        for cls in spec.classes:
            for mode in ("variation", "fuse"):
                if mode in spec.modes:
                    items.append(PromptItem(cls, mode, f"a photo of a {cls}", "class-prompt"))
    result = Plan(spec=spec, label_map=labels_for(spec), prompts=items, inputs=inputs, sources=tuple(sources))
    result.slots()  # fails early when a class × mode has no prompts or sources
    return result


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
) -> dict[str, Any]:
    """Run, resume or find finished the job for ``spec``; returns the summary.

    SIGINT / SIGTERM stop the run between batches (the shard in flight is
    abandoned, finished ones stay); a second signal stops at once. Either way
    no file is left half-written, and rerunning resumes. ``llm_cache=False``
    (``--no-cache``) asks the LLM afresh instead of reusing its cached answers.
    """
    the_plan = plan(spec, llm_cache=llm_cache)
    rundir = RunDir(spec.out, spec.split)
    rundir.open()  # the run lock: a second process fails here at once
    started = False
    try:
        state = rundir.check(spec.content_dict(), the_plan.spec_hash, overwrite=overwrite)
        if state in ("complete", "short"):
            return finished_summary(rundir, the_plan)
        generator, scorer = _load_models(spec, the_plan, generator, scorer)
        if overwrite and not rundir.is_blank():  # only once the new run can start; only what runs wrote
            rundir.clear()
        started = True
        rundir.prepare(dump_spec(spec, the_plan.spec_hash, __version__, the_plan.inputs), the_plan.spec_hash,
                       spec.content_dict(), the_plan.inputs, the_plan.label_map.to_text(the_plan.spec_hash))
        return _run_logged(spec, the_plan, rundir, state, generator, scorer, writers, progress or make_progress(quiet))
    finally:
        rundir.close(failed_before_start=not started)


def _run_logged(
    spec: RunSpec, the_plan: Plan, rundir: RunDir, state: str, generator: Any, scorer: Any,
    writers: list[Writer] | None, progress: Progress,
) -> dict[str, Any]:
    """The run between its start and end lines in the run log; the summary is written last."""
    rundir.log({"event": "start", "time": _now(), "spec_hash": the_plan.spec_hash, "resumed": state == "incomplete",
                "model": generator.model, "scorer": scorer.name, "versions": versions()})
    from dalle_data.llm.cancel import RequestsCancelled, reset_cancel

    status = "failed"
    reset_cancel()
    try:
        with stop_on_signals() as stop:
            summary = _run(spec, the_plan, generator, scorer, writers, progress, stop)
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
    rundir.finish(summary)
    return summary


def finished_summary(rundir: RunDir, the_plan: Plan) -> dict[str, Any]:
    """The saved summary of a run that already ended, after a cheap check that its files are all there."""
    from dalle_data.verify import quick_check

    summary = rundir.saved_summary() or {}
    problems = quick_check(rundir.path)
    if problems:
        from dalle_data.verify import repair_locked

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
        from dalle_data.llm.cancel import cancel_requests

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


def _load_models(spec: RunSpec, the_plan: Plan, generator: Generator | None, scorer: Scorer | None) -> tuple[Any, Any]:
    from dalle_data.generators.registry import check_model_name
    from dalle_data.scoring.registry import check_scorer_name, resolve_scorer_name

    scorer_name = resolve_scorer_name(spec.scorer, spec.model)
    if generator is None and spec.backend == "openai":
        from dalle_data.generators.registry import load_api_generator

        generator = load_api_generator(spec)  # no weights: checks the key and URL before any heavy load
    if generator is None:
        check_model_name(spec.model)
    if scorer is None:
        check_scorer_name(scorer_name)
    _check_offline(spec, scorer_name, generator is None, scorer is None)
    if generator is None or scorer is None:
        from dalle_data.device import resolve_device

        device = resolve_device(spec.device)
        if generator is None:
            from dalle_data.generators import load_generator

            generator = load_generator(spec.model, prior=spec.prior, device=device)
        if scorer is None:
            from dalle_data.scoring import load_scorer

            scorer = load_scorer(scorer_name, device=device)
    for mode, method in (("variation", "variation"), ("fuse", "variation"), ("inpaint", "inpaint")):
        if mode in spec.modes and not hasattr(generator, method):
            raise SpecError(f"the {generator.backend} backend cannot do {mode}; choose another --model or mode")
    scorer.set_labels(the_plan.zero_shot_labels())
    return generator, scorer


def _check_offline(spec: RunSpec, scorer_name: str, generator: bool, scorer: bool) -> None:
    """Without a network, name every model piece missing from the local cache at once (not one per try)."""
    from dalle_data.hub import check_offline

    pieces = []
    if generator and spec.backend == "diffusers":
        from dalle_data.generators.registry import hub_pieces

        pieces += hub_pieces(spec.model, spec.prior, "inpaint" in spec.modes)
    if scorer:
        from dalle_data.scoring.registry import hub_pieces as scorer_pieces

        pieces += scorer_pieces(scorer_name)
    if pieces:
        check_offline(pieces)


def _make_runner(
    spec: RunSpec, the_plan: Plan, generator: Any, scorer: Any, writers: list[Writer] | None,
    progress: Progress, stop: threading.Event, store: Any = None,
) -> Any:
    from dalle_data.generators.registry import resolve_settings
    from dalle_data.image_modes import ImageOptions
    from dalle_data.runner import Runner
    from dalle_data.scoring.filters import ClipFilter
    from dalle_data.shards import ShardStore
    from dalle_data.writers import WriterContext, make_writers

    if writers is None:
        ctx = WriterContext(
            out_dir=spec.out, class_names=the_plan.label_map.names, class_dirs=the_plan.label_map.folders,
            split=spec.split, keep_rejected=spec.keep_rejected,
        )
        writers = make_writers(spec.formats, ctx)
    settings = resolve_settings(spec, generator.defaults)
    return Runner(
        slots=the_plan.slots(), generator=generator, settings=settings, scorer=scorer,
        filter=ClipFilter(min_clip=spec.min_clip, zero_shot=spec.filter == "zero-shot"),
        writers=writers, shard_size=spec.shard_size,
        # an API backend runs a batch's requests concurrently: a batch must hold enough of them
        batch_size=max(spec.batch_size, spec.max_concurrency) if spec.backend == "openai" else spec.batch_size,
        store=store or ShardStore(Layout(spec.out, spec.split), the_plan.label_map), progress=progress, stop=stop,
        image_options=ImageOptions(
            prompt_weight=spec.prompt_weight, fuse_weight=spec.fuse_weight, mask=spec.mask,
            mask_dir=Path(spec.mask_dir).expanduser() if spec.mask_dir else None,
            source_root=Path(spec.from_dir).expanduser() if spec.from_dir else None,
        ),
    )


def _run(
    spec: RunSpec, the_plan: Plan, generator: Any, scorer: Any, writers: list[Writer] | None,
    progress: Progress, stop: threading.Event,
) -> dict[str, Any]:
    from dalle_data.runner import summarize

    runner = _make_runner(spec, the_plan, generator, scorer, writers, progress, stop)
    stats = runner.run()
    outputs, missing = outputs_of(spec)
    extra = {
        "out": str(spec.out), "outputs": outputs, "missing_outputs": missing, "spec_hash": the_plan.spec_hash,
        "model": generator.model, "backend": generator.backend, "scorer": scorer.name,
        "labels": list(the_plan.labels), "labels_file": str(Layout(spec.out).labels),
        "settings": {k: getattr(runner.settings, k) for k in runner.settings.__dataclass_fields__},
    }
    return summarize(stats, extra)


def regenerate(spec: RunSpec, shards: set[str], *, generator: Any = None, scorer: Any = None) -> dict[str, bytes]:
    """Redo ``shards`` of a run in memory, as the first time (same plan, seeds, batches): image bytes by id.

    Every other shard is replayed from its marker; nothing is written. ``verify --repair`` uses it for
    images lost from every format.
    """
    from dalle_data.progress import NullProgress

    the_plan = plan(spec)
    generator, scorer = _load_models(spec, the_plan, generator, scorer)
    capture = _Capture(shards)
    store = _Replay(Layout(spec.out, spec.split), the_plan.label_map, shards)
    _make_runner(spec, the_plan, generator, scorer, [capture], NullProgress(), threading.Event(), store).run()
    return capture.images


class _Capture:
    """A writer that keeps the image bytes of some shards in memory."""

    def __init__(self, shards: set[str]) -> None:
        self.shards = shards
        self.images: dict[str, bytes] = {}

    def write(self, shard: str, records: Any) -> None:
        if shard in self.shards:
            self.images.update({r.id: r.image for r in records if r.image is not None})

    def close(self, records: Any) -> None:
        pass


class _Replay(ShardStore):
    """Replays every marker but those of the shards to redo; records nothing."""

    def __init__(self, layout: Layout, labels: LabelMap, redo: set[str]) -> None:
        super().__init__(layout, labels)
        self.redo = redo

    def load(self, shard: str, unit_ids: Any) -> Any:
        return None if shard in self.redo else super().load(shard, unit_ids)

    def begin(self, shard: str, ids: Any) -> None:
        pass

    def commit(self, shard: str, records: Any) -> None:
        pass


def outputs_of(spec: RunSpec) -> tuple[dict[str, str], dict[str, str]]:
    """The dataset folders that exist, and for each requested format that does not, why."""
    layout = Layout(spec.out, spec.split)
    outputs: dict[str, str] = {}
    missing: dict[str, str] = {}
    for fmt in spec.formats:
        if fmt == "parquet":
            folder, there = layout.parquet_dir(), any(layout.parquet_dir().glob("part-*.parquet"))
        else:
            folder, there = layout.images_dir(), layout.metadata().is_file()
        if there:
            outputs[fmt] = str(folder)
        else:
            missing[fmt] = f"no image was kept, so no {fmt} dataset was written"
    return outputs, missing


def dry_run(spec: RunSpec, *, price_per_image: float | None = None, llm_cache: bool = True) -> dict[str, Any]:
    """What ``spec`` would make and cost, without loading a model or making a request."""
    from dalle_data import pricing

    _, counts = _source_counts(spec)
    targets = spec.slot_targets(counts)
    images, most = sum(t for t, _ in targets.values()), sum(b for _, b in targets.values())
    settings_size = f"{spec.width or 1024}x{spec.height or 1024}"
    out: dict[str, Any] = {
        "dry_run": True, "out": str(spec.out), "backend": spec.backend, "model": spec.model,
        "classes": list(spec.classes), "modes": dict(spec.modes),
        "slots": [{"class": c, "mode": m, "target": t, "max_attempts": b} for (c, m), (t, b) in targets.items()],
        "images": {"target": images, "max": most},
    }
    if spec.backend == "openai":
        from dalle_data.generators.openai_images import DEFAULT_QUALITY

        quality = spec.quality or DEFAULT_QUALITY
        out.update(quality=quality, size=settings_size, max_concurrency=spec.max_concurrency)
        out["cost"] = pricing.estimate(spec.model, quality, settings_size, images, most, price_per_image).as_dict()
    else:
        out["cost"] = {"currency": "USD", "per_image": 0.0, "expected": 0.0, "max": 0.0, "source": "local model",
                       "note": "local generation: no per-image API charge"}
    if spec.llm is not None:
        from dalle_data.llm import make_writer
        from dalle_data.llm.writer import PER_REQUEST

        writer = make_writer(spec.llm, base_url=spec.llm_base_url, seed=spec.seed, cache=llm_cache)
        missing = [c for c in spec.classes if not writer.cached(c, spec.llm_prompts)]
        per_class = -(-spec.llm_prompts // PER_REQUEST)
        out["llm"] = {"model": spec.llm, "base_url": writer.endpoint.url, "prompts_per_class": spec.llm_prompts,
                      "classes_cached": len(spec.classes) - len(missing),
                      "requests_at_least": per_class * len(missing)}
    return out
