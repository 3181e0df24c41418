"""The generator backends: one record per backend, registered through entry points.

A ``Backend`` says what a backend is called, what it can do (the
capabilities of ``dalle_data.modes``), which model and scorer it uses by
default, its options (a pydantic model: ``--option KEY=VALUE`` or
``options:`` in a spec file, validated and hashed into the spec, so a change
of options is another run), the spec flags that belong to it alone, how to
check a spec for it, its price model (what ``--dry-run`` says a run costs),
which of its models make each capability, what it downloads (for the offline
check) and where its loader lives (imported only when a run starts). The
spec, planning, the job and ``--dry-run`` ask this registry instead of testing
backend names; modes a backend cannot do are refused when the spec is
checked, with a one-line error that names the backends that can.

Adding a backend: write its generator module (the ``Generator`` protocol and
the capability protocols of ``dalle_data.generators.base``) and a
``Backend(...)`` record, and register it under the entry point group
``dalle_data.backends`` in its package's pyproject.toml; the built-in
backends are registered the same way. ``dalle_data.testing.BackendContract``
is the contract its tests run.

This module imports nothing heavy and nothing of the rest of dalle-data but
the mode and preset tables, so ``config`` can use it without an import circle.
The entry points are read the first time a backend is asked for, not at
import.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import EntryPoint, entry_points
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dalle_data.errors import PluginError
from dalle_data.modes import MODES
from dalle_data.presets import DIFFUSERS_PRESETS, GUIDANCE_FREE_PRESETS, IP_ADAPTER_PRESETS

log = logging.getLogger(__name__)

OPENAI_DEFAULT_MODEL = "gpt-image-1.5"
DEFAULT_SCORER = "ViT-L-14/openai"


class Options(BaseModel):
    """A backend's own options: ``--option KEY=VALUE`` (repeatable) or ``options:`` in a spec file.

    Validated against the chosen backend's model when the spec is built, kept in the spec without the
    values that equal their defaults, and hashed with it: a change of options is another run.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class DiffusersOptions(Options):
    negative_prompt: str | None = Field(
        None, min_length=1, max_length=1000,
        description="what images should not show (Kandinsky 2.2, and SD/SDXL/SD3-family models with guidance > 1)")
    ip_adapter: str | None = Field(
        None, min_length=1,
        description="IP-Adapter weights (a folder or hub id; 'default' for the family's h94/IP-Adapter) that give "
                    "an SD or SDXL model the variation and fuse modes")
    ip_adapter_scale: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False,
                                    description="how strongly the IP-Adapter image prompt steers the image")

    @model_validator(mode="after")
    def _scale_needs_adapter(self) -> DiffusersOptions:
        if self.ip_adapter is None and "ip_adapter_scale" in self.model_fields_set:
            raise ValueError("ip_adapter_scale needs ip_adapter=default|DIR|HUB_ID")
        return self


class OpenAIOptions(Options):
    moderation: Literal["auto", "low"] = Field("auto", description="content moderation of generations (auto or low)")
    input_fidelity: Literal["low", "high"] | None = Field(
        None, description="edits (variation, fuse, inpaint): how closely to keep the reference images' features")


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    capabilities: frozenset[str]
    default_model: str
    loader: str  # "module:function", called with (spec, device) -> Generator
    price: str  # "module:function", called with (spec, images, most, flat) -> what --dry-run shows of the cost
    models: str = "a model name"  # what --model takes
    presets: Mapping[str, str] = field(default_factory=dict)  # --model names it knows → what they are
    options: type[Options] = Options  # its --option model (no options by default)
    fields: frozenset[str] = frozenset()  # spec fields (flags) that mean something for this backend alone
    default_scorer: str = DEFAULT_SCORER  # the CLIP scorer --scorer auto picks ...
    model_scorers: Mapping[str, str] = field(default_factory=dict)  # ... unless the model has its own
    check: Callable[[Mapping[str, Any]], str | None] = field(default=lambda spec: None)
    reproducible: bool = True  # the same seed gives the same image (an API takes no seed)
    needs_device: bool = True  # loads weights onto a torch device
    # capability → which of its models make it, said when a loaded model cannot (none: every model can,
    # and the refusal says --backend NAME)
    capable_models: Mapping[str, str] = field(default_factory=dict)
    # "module:function", called with (spec) -> the hub pieces a run would download, checked at once offline
    # (what, name, repo, files that show it is cached); None: nothing to download
    pieces: str | None = None

    def can(self, mode: str) -> bool:
        return MODES[mode].capability in self.capabilities

    def load(self, spec: Any, device: str) -> Any:
        return function_at(self.loader)(spec, device)

    def hub_pieces(self, spec: Any) -> list[tuple[str, str, str, tuple[str, ...]]]:
        """The hub pieces a run of ``spec`` loads (for the offline check); none for most backends."""
        return list(function_at(self.pieces)(spec)) if self.pieces else []

    def cost(self, spec: Any, images: int, most: int, flat: float | None = None) -> dict[str, Any]:
        """What ``--dry-run`` shows of the price of ``images`` kept images (at most ``most`` made)."""
        return function_at(self.price)(spec, images, most, flat)

    def scorer_for(self, model: str) -> str:
        """The scorer ``--scorer auto`` means with ``model``."""
        return self.model_scorers.get(model, self.default_scorer)

    def option_values(self, options: Mapping[str, Any]) -> Any:
        """A spec's stored options as the backend's option model (defaults filled in)."""
        return self.options(**options)

    def parse_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """``given`` checked against the option model: the values that differ from their defaults.

        Raises ``ValueError`` with one line (an unknown option names the ones there are)."""
        given = {str(k).replace("-", "_"): v for k, v in (given or {}).items()}
        known = self.options.model_fields
        for key in given:
            if key not in known:
                takes = f"it takes {', '.join(known)}" if known else "it takes none"
                raise ValueError(f"unknown option {key!r} for --backend {self.name}; {takes}")
        try:
            parsed = self.options(**given)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"--option {where}: {message}" if where else f"--option: {message}") from None
        return parsed.model_dump(mode="json", exclude_defaults=True)


def function_at(where: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` string names (imported now)."""
    module, _, function = where.partition(":")
    return getattr(importlib.import_module(module), function)


IP_ADAPTER_PIPELINES = frozenset({"StableDiffusionXLPipeline", "StableDiffusionPipeline"})


def folder_pipeline(model: Any) -> str | None:
    """The pipeline class a model folder's ``model_index.json`` names (None: not a folder, or none named)."""
    import json
    from pathlib import Path

    try:
        index = Path(str(model)).expanduser() / "model_index.json"
        return str(json.loads(index.read_text(encoding="utf-8"))["_class_name"]) if index.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_diffusers(spec: Mapping[str, Any]) -> str | None:
    """Options a preset or a model folder cannot take, refused before it loads (hub ids are checked when
    loaded)."""
    model, options = spec.get("model"), spec.get("options") or {}
    if options.get("ip_adapter"):
        pipeline = folder_pipeline(model)
        if (model in DIFFUSERS_PRESETS and model not in IP_ADAPTER_PRESETS) or (
                pipeline is not None and pipeline not in IP_ADAPTER_PIPELINES):
            what = f"{model} ({pipeline})" if pipeline else str(model)
            return (f"--option ip_adapter: {what} takes no IP-Adapter; it is for SD 1.x and SDXL models "
                    f"(--model {' or '.join(sorted(IP_ADAPTER_PRESETS))}, or a folder or hub id of one)")
    guidance = spec.get("guidance_scale")
    if options.get("negative_prompt") and model in GUIDANCE_FREE_PRESETS and (guidance is None or guidance <= 1):
        return (f"--option negative_prompt does nothing without guidance, and {model} runs without it; set "
                "--guidance-scale above 1 as well, or drop the option")
    return None


NO_INPUT_FIDELITY = frozenset({"gpt-image-1-mini"})  # the API refuses input_fidelity for these models


OPENAI_QUALITIES = ("low", "medium", "high", "auto")
OPENAI_DEFAULT_QUALITY = "medium"

# Models OpenAI retired: when, and what replaces them (refused with that line).
RETIRED_MODELS: dict[str, tuple[str, str]] = {
    "dall-e-2": ("May 2026", "gpt-image-1.5"),
    "dall-e-3": ("May 2026", "gpt-image-1.5"),
    "gpt-image-1": ("October 2026", "gpt-image-1.5"),
}


def retired(model: str) -> str | None:
    """One line saying that ``model`` is retired and what replaces it, or None."""
    if model in RETIRED_MODELS:
        when, instead = RETIRED_MODELS[model]
        return f"{model} was retired by OpenAI in {when}; use --model {instead} (the current GPT image model)"
    return None


def _check_openai(spec: Mapping[str, Any]) -> str | None:
    if retired(str(spec.get("model"))):
        return retired(str(spec.get("model")))
    if spec.get("model") in DIFFUSERS_PRESETS:
        return f"--model {spec['model']} is a diffusers model; with --backend openai name an image model such as " \
               f"{OPENAI_DEFAULT_MODEL}"
    if (spec.get("options") or {}).get("input_fidelity") and spec.get("model") in NO_INPUT_FIDELITY:
        return f"--option input_fidelity: {spec['model']} does not take it; use --model {OPENAI_DEFAULT_MODEL}"
    return None


OPENAI_MODELS = {
    OPENAI_DEFAULT_MODEL: "the current GPT image model: generation and edits with reference images and masks",
    "gpt-image-1-mini": "the smaller, cheaper GPT image model",
}


# Which of the diffusers backend's models make each capability (said when a loaded model cannot).
DIFFUSERS_CAPABLE_MODELS = {
    "text-to-image": "--model kandinsky-2-2, any diffusers text-to-image model (sdxl-turbo, flux-schnell, ...)",
    "variation": "--model kandinsky-2-2, --model stable-unclip, an SD/SDXL model with --option ip_adapter=default",
    "fuse": "--model kandinsky-2-2, --model stable-unclip, an SD/SDXL model with --option ip_adapter=default",
    "inpaint": "--model kandinsky-2-2, an SD/SDXL/FLUX model (their inpaint pipeline)",
}

# The built-in backends: registered through the entry point group below exactly as a plug-in is
# (pyproject.toml declares them), so these records are what ``diffusers = "dalle_data.backends:DIFFUSERS"`` names.
DIFFUSERS = Backend(
    name="diffusers",
    description="local models through diffusers: Kandinsky 2.2 (the default), SD, SDXL, SD3, FLUX, Sana, "
                "Stable unCLIP, any text-to-image pipeline folder or hub id",
    capabilities=frozenset({"text-to-image", "variation", "fuse", "inpaint"}),
    default_model="kandinsky-2-2",
    loader="dalle_data.generators.registry:load_for_spec",
    price="dalle_data.pricing:local_cost",
    models="a preset, a hub id or a save_pretrained folder (the pipeline class read from model_index.json)",
    presets=DIFFUSERS_PRESETS,
    options=DiffusersOptions,
    fields=frozenset({"prior", "steps", "prior_steps", "guidance_scale"}),
    check=_check_diffusers,
    model_scorers={"tiny": "tiny", "shapes-demo": "shapes-demo"},
    capable_models=DIFFUSERS_CAPABLE_MODELS,
    pieces="dalle_data.generators.registry:spec_hub_pieces",
)
OPENAI = Backend(
    name="openai",
    description="the OpenAI images API (current GPT image models): generation, edits with reference images "
                "(variation, fuse) and masked edits",
    capabilities=frozenset({"text-to-image", "variation", "fuse", "inpaint"}),
    default_model=OPENAI_DEFAULT_MODEL,
    loader="dalle_data.generators.registry:load_api_for_spec",
    price="dalle_data.pricing:api_cost",
    models="an image model name of the API (retired ones are refused, naming the replacement)",
    presets=OPENAI_MODELS,
    options=OpenAIOptions,
    fields=frozenset({"quality", "openai_batch"}),
    check=_check_openai,
    reproducible=False,
    needs_device=False,
)


# -- the registry: entry points of the group ``dalle_data.backends`` ---------------------------------------------
# A package adds a backend by declaring, in its pyproject.toml,
#     [project.entry-points."dalle_data.backends"]
#     mybackend = "my_package.backend:BACKEND"    # a Backend record
# dalle-data's own backends are declared the same way. ``BUILTIN_ENTRY_POINTS`` repeats those two lines for a
# source checkout whose installed metadata predates them (run from PYTHONPATH, or an editable install made
# before they were declared): a built-in the installed ``dalle-data`` distribution does not declare is
# registered from here, through the same loading code.
GROUP = "dalle_data.backends"
DISTRIBUTION = "dalle-data"
BUILTIN_ENTRY_POINTS: tuple[tuple[str, str], ...] = (
    ("diffusers", "dalle_data.backends:DIFFUSERS"),
    ("openai", "dalle_data.backends:OPENAI"),
)


def _distribution(point: Any) -> str:
    """The distribution that declares ``point`` (dalle-data's own for the fallback built-ins)."""
    dist = getattr(point, "dist", None)
    name = getattr(dist, "name", None) or (dist.metadata["Name"] if dist is not None else None)
    return str(name) if name else DISTRIBUTION


def _same(dist: str) -> str:
    return dist.lower().replace("_", "-").replace(".", "-")


def _load_point(point: Any, dist: str) -> Backend:
    """The Backend an entry point names; anything wrong is one line naming the distribution."""
    where = f"the backend plug-in {point.name!r} ({point.value}) of the distribution {dist}"
    fix = f"fix it or uninstall it (pip uninstall {dist})"
    try:
        record = point.load()
    except Exception as err:  # noqa: BLE001 - a third party's import error: one line, never a traceback
        first = (str(err).strip().splitlines() or [""])[0]
        raise PluginError(f"{where} cannot be loaded ({type(err).__name__}: {first}); {fix}") from None
    if not isinstance(record, Backend):
        raise PluginError(f"{where} is a {type(record).__name__}, not a dalle_data.backends.Backend; {fix}")
    if record.name != point.name:
        raise PluginError(f"{where} names a backend {record.name!r}; the entry point's name and the "
                          f"Backend's name must be the same; {fix}")
    known = {m.capability for m in MODES.values()}
    unknown = sorted(set(record.capabilities) - known)
    if unknown:
        raise PluginError(f"{where} declares unknown capabilities ({', '.join(unknown)}; there are "
                          f"{', '.join(sorted(known))}); {fix}")
    return record


def discover(points: Any = None) -> tuple[dict[str, Backend], dict[str, str], dict[str, PluginError]]:
    """Every registered backend (the built-ins first, then plug-ins by name), the distribution of each, and
    the plug-ins that cannot be used, by the name they register.

    ``points``: the entry points to read (default: those installed in the group). A broken plug-in, or two
    that register one name, is a ``PluginError`` of one line that names the distribution: raised when its
    backend is asked for, a warning otherwise, so one broken package does not stop every command (a plug-in
    that takes a built-in's name is left out; the built-in stays)."""
    installed = [(p, _distribution(p)) for p in (entry_points(group=GROUP) if points is None else points)]
    builtin_names = {name for name, _ in BUILTIN_ENTRY_POINTS}
    ours = {p.name: (p, d) for p, d in installed if _same(d) == DISTRIBUTION and p.name in builtin_names}
    builtin = [ours.get(name) or (EntryPoint(name, value, GROUP), DISTRIBUTION) for name, value in BUILTIN_ENTRY_POINTS]
    others = sorted(((p, d) for p, d in installed if not (_same(d) == DISTRIBUTION and p.name in builtin_names)),
                    key=lambda item: (item[0].name, item[1]))
    backends: dict[str, Backend] = {}
    origin: dict[str, str] = {}
    problems: dict[str, PluginError] = {}
    for point, dist in builtin + others:
        if point.name in origin or point.name in problems:
            first = origin.get(point.name) or problems[point.name].distribution
            problems[point.name] = PluginError(
                f"the backend plug-in {point.name!r} of the distribution {dist} clashes with the backend of that "
                f"name from {first}; uninstall one of them (pip uninstall {dist})", distribution=dist)
            if origin.get(point.name) != DISTRIBUTION:
                backends.pop(point.name, None)  # two plug-ins of one name: neither is used
                origin.pop(point.name, None)
            continue
        try:
            backends[point.name] = _load_point(point, dist)
        except PluginError as err:
            err.distribution = dist
            problems[point.name] = err
            continue
        origin[point.name] = dist
    return backends, origin, problems


class Registry(MutableMapping[str, Backend]):
    """The backends by name, read from the entry points the first time one is asked for (not at import, so
    ``--help`` stays fast). Tests may add a backend for a while (``monkeypatch.setitem(BACKENDS, ...)``)."""

    def __init__(self) -> None:
        self._backends: dict[str, Backend] | None = None
        self._origin: dict[str, str] = {}
        self._problems: dict[str, PluginError] = {}
        self._clashes: list[PluginError] = []

    def _all(self) -> dict[str, Backend]:
        if self._backends is None:
            self._backends, self._origin, problems = discover()
            self._problems = {k: v for k, v in problems.items() if k not in self._backends}
            self._clashes = [v for k, v in problems.items() if k in self._backends]  # a built-in's name taken
            for problem in [*self._problems.values(), *self._clashes]:
                log.warning("%s", problem)
        return self._backends

    def problems(self) -> list[PluginError]:
        """The plug-ins that cannot be used: broken, or registering a name another backend has."""
        self._all()
        return [*self._clashes, *self._problems.values()]

    def reload(self) -> None:
        """Read the entry points again (after a package was installed in this process)."""
        self._backends, self._origin, self._problems, self._clashes = None, {}, {}, []

    def distribution(self, name: str) -> str:
        """The distribution that registered backend ``name`` (``dalle-data`` for the built-ins)."""
        self._all()
        return self._origin.get(name, "(registered in-process)")

    def __getitem__(self, name: str) -> Backend:
        backends = self._all()
        if name not in backends and name in self._problems:
            raise self._problems[name]  # the broken plug-in asked for: its one line
        return backends[name]

    def __setitem__(self, name: str, value: Backend) -> None:
        self._all()[name] = value

    def __delitem__(self, name: str) -> None:
        del self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"Registry({list(self)})"


BACKENDS = Registry()

def backend(name: str) -> Backend:
    return BACKENDS[name]


def capable(mode: str) -> list[str]:
    """The backends that can make ``mode``."""
    return [b.name for b in BACKENDS.values() if b.can(mode)]


def capable_hint(capability: str) -> str:
    """What makes ``capability``, over every backend: the models of a backend that declares which of its
    models do (``Backend.capable_models``), else ``--backend NAME``."""
    parts = [b.capable_models.get(capability) or f"--backend {b.name}" for b in BACKENDS.values()
             if capability in b.capabilities]
    if not parts:
        return "no backend (none registered can)"
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"


def check_modes(backend_name: str, modes: Mapping[str, float] | list[str]) -> str | None:
    """A one-line reason why ``backend_name`` cannot make one of ``modes``, or None."""
    chosen = BACKENDS[backend_name]
    for name in modes:
        if not chosen.can(name):
            others = [b for b in capable(name) if b != backend_name]
            where = f"use --backend {' or '.join(others)}" if others else "no backend can"
            return f"the {backend_name} backend cannot do {name}; {where} for {name}"
    return None


def check_fields(backend_name: str, spec: Mapping[str, Any], defaults: Mapping[str, Any]) -> str | None:
    """A one-line reason when ``spec`` sets a flag that belongs to another backend, or None."""
    mine = BACKENDS[backend_name].fields
    for other in BACKENDS.values():
        for name in sorted(other.fields - mine):
            if spec.get(name, defaults.get(name)) != defaults.get(name):
                return f"--{name.replace('_', '-')} applies to --backend {other.name}"
    return None
