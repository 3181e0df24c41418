"""The generator backends, declared in one place.

A ``Backend`` says what a backend is called, what it can do (the
capabilities of ``dalle_data.modes``), which model and scorer it uses by
default, its options (a pydantic model: ``--option KEY=VALUE`` or
``options:`` in a spec file, validated and hashed into the spec, so a change
of options is another run), the spec flags that belong to it alone, how to
check a spec for it, its price model (what ``--dry-run`` says a run costs)
and where its loader lives (imported only when a run starts). The spec,
planning, the job and ``--dry-run`` ask this registry instead of testing
backend names; modes a backend cannot do are refused when the spec is
checked, with a one-line error that names the backends that can.

Adding a backend: write its generator module (the ``Generator`` protocol of
``dalle_data.generators.base``), then add one ``Backend(...)`` to
``BACKENDS`` below; ``tests/backends/test_contract.py`` runs the shared
contract against it.

This module imports nothing heavy and nothing of the rest of dalle-data but
the mode table, so ``config`` can use it without an import circle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dalle_data.modes import MODES

DIFFUSERS_PRESETS: dict[str, str] = {
    "kandinsky-2-2": "Kandinsky 2.2 prior + decoder from the Hugging Face Hub (needs a GPU for speed)",
    "shapes-demo": "a small Kandinsky 2.2-layout unCLIP trained here on a world of coloured shapes, offline",
    "tiny": "Kandinsky 2.2 pipeline classes with tiny random weights, offline (tests, demos)",
}
# Text-to-image models of other families (dalle_data.generators.text2image.PRESETS holds their hub ids and
# recommended settings); any diffusers text-to-image folder or hub id works too.
DIFFUSERS_PRESETS.update({
    "sdxl-turbo": "SDXL-Turbo (stabilityai/sdxl-turbo): text-to-image in 1-4 steps, 512²",
    "sd-turbo": "SD-Turbo (stabilityai/sd-turbo): text-to-image in 1-4 steps, 512²",
    "sdxl": "SDXL 1.0 base (stabilityai/stable-diffusion-xl-base-1.0): text-to-image, 1024²",
    "sd3.5-large-turbo": "SD 3.5 Large Turbo (stabilityai/stable-diffusion-3.5-large-turbo): 4 steps, 1024²",
    "flux-schnell": "FLUX.1 [schnell] (black-forest-labs/FLUX.1-schnell): 4 steps, 1024²",
    "sana-1600m": "Sana 1.6B (Efficient-Large-Model/Sana_1600M_1024px_diffusers): 20 steps, 1024²",
    "stable-unclip": "Stable unCLIP 2.1 small (stabilityai/stable-diffusion-2-1-unclip-small): variation and fuse only",
})
# What the spec check must know of the presets before any model loads (tests/backends/test_registry.py holds
# these to dalle_data.generators.text2image.PRESETS): those made to run without guidance, and those of a family
# with an IP-Adapter (SDXL: h94/IP-Adapter's sdxl_models).
GUIDANCE_FREE_PRESETS = frozenset({"sdxl-turbo", "sd-turbo", "sd3.5-large-turbo", "flux-schnell"})
IP_ADAPTER_PRESETS = frozenset({"sdxl", "sdxl-turbo"})
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

    def can(self, mode: str) -> bool:
        return MODES[mode].capability in self.capabilities

    def load(self, spec: Any, device: str) -> Any:
        return function_at(self.loader)(spec, device)

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


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend(
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
    ),
    Backend(
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
    ),
)}


def backend(name: str) -> Backend:
    return BACKENDS[name]


def capable(mode: str) -> list[str]:
    """The backends that can make ``mode``."""
    return [b.name for b in BACKENDS.values() if b.can(mode)]


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
