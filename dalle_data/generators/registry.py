"""From ``--model`` to a generator: presets, hub ids and local directories."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from dalle_data.backends import BACKENDS
from dalle_data.errors import ModelLoadError, SpecError
from dalle_data.generators.base import Compilable, GenerationSettings, ImagePrompt, NegativePrompt
from dalle_data.hub import looks_like_hub_id
from dalle_data.presets import DIFFUSERS_PRESETS, IP_ADAPTER_PRESETS, PRESETS as PRESET_TABLE

if TYPE_CHECKING:
    from dalle_data.config import RunSpec
    from dalle_data.generators.base import Generator

# Preset name → what it means (dalle_data.presets, the one preset table). ``tiny`` is built offline from configs.
MODEL_PRESETS: dict[str, str] = DIFFUSERS_PRESETS


def default_templates(model: str) -> Path | None:
    """The template pack a model preset is meant for (None: the built-in default pack)."""
    if model == "shapes-demo":
        return Path(__file__).resolve().parents[2] / "templates" / "shapes.yaml"
    return None


def shapes_demo_dir() -> Path:
    """The committed shapes-demo weights (``make demo-model`` retrains them)."""
    path = Path(__file__).resolve().parents[2] / "models" / "shapes-demo"
    if not (path / "decoder").is_dir():
        raise ModelLoadError(f"the shapes-demo weights are missing from {path}; run `make demo-model` to train them")
    return path


def check_model_name(model: str) -> None:
    """Fail early (before any heavy import) on a ``--model`` that cannot work."""
    if model in MODEL_PRESETS or looks_like_hub_id(model):
        return
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SpecError(f"--model {model}: a model must be a directory (a diffusers pipeline folder with "
                            "model_index.json, or prior/ and decoder/), not a file")
        if not (path / "model_index.json").is_file() and not (path / "decoder").is_dir():
            raise SpecError(f"--model {model}: not a model folder (no model_index.json, no prior/ and decoder/); "
                            "pass a folder written by save_pretrained")
        return
    if any(sep in model for sep in ("/", "\\")) or model.startswith((".", "~")):
        raise SpecError(f"--model {model}: no such directory")
    raise SpecError(
        f"unknown model {model!r}: use a preset ({', '.join(MODEL_PRESETS)}), "
        "a Hugging Face hub id (org/name) or a local directory"
    )


def hub_pieces(model: str, prior: str | None, inpaint: bool) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The hub repos ``--model`` loads from: (what, name, repo, files that show it is cached)."""
    from dalle_data.generators.kandinsky import DECODER_ID, INPAINT_ID, PRIOR_ID  # deferred: heavy

    from dalle_data.generators.text2image import KANDINSKY_CLASSES, PRESETS  # deferred: heavy

    if model in PRESETS:
        return [("model", model, PRESETS[model].repo, ("model_index.json",))]
    if model == "stable-unclip":
        return [("model", model, str(PRESET_TABLE[model].repo), ("model_index.json",))]
    if model in ("tiny", "shapes-demo") or Path(model).expanduser().is_dir() or not (
        model == "kandinsky-2-2" or looks_like_hub_id(model)
    ):
        return []
    if _hub_pipeline_class(model, local=True) not in (None, *KANDINSKY_CLASSES):
        return [("model", model, model, ("model_index.json",))]
    decoder = DECODER_ID if model == "kandinsky-2-2" else model
    repos = [("prior", prior or PRIOR_ID), ("decoder", decoder)] + ([("inpainting decoder", INPAINT_ID)] if inpaint else [])
    return [(what, repo, repo, ("model_index.json",)) for what, repo in repos if not Path(repo).is_dir()]


def ip_adapter_pieces(model: str, adapter: str | None) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The hub files ``--option ip_adapter`` loads (none for a local folder, or when the model's family is not
    known before it loads)."""
    if adapter is None or Path(adapter).expanduser().exists():
        return []
    from dalle_data.generators.ip_adapter import IP_ADAPTER_FAMILIES, ip_adapter_source  # deferred: heavy
    from dalle_data.generators.text2image import pipeline_class_of  # deferred: heavy

    folder = Path(model).expanduser()
    if model in IP_ADAPTER_PRESETS:
        family: str | None = "sdxl"
    elif folder.is_dir():
        family = IP_ADAPTER_FAMILIES.get(pipeline_class_of(folder) or "")
    else:
        family = IP_ADAPTER_FAMILIES.get(_hub_pipeline_class(model, local=True) or "")
    if family is None:
        return []
    source = ip_adapter_source(None if adapter == "default" else adapter, family)
    inner = f"{source.subfolder}/" if source.subfolder else ""
    return [("IP-Adapter", source.label, source.repo, (f"{inner}{source.weight_name}",
                                                       f"{inner}image_encoder/config.json"))]


def load_generator(model: str, *, prior: str | None = None, device: str = "cpu", seed: int = 0,
                   dtype: str = "auto") -> Generator:
    """Load the generator named by ``model`` onto ``device`` (``dtype`` auto: half precision on CUDA)."""
    check_model_name(model)
    from dalle_data.device import default_dtype  # deferred: heavy
    from dalle_data.generators.kandinsky import DECODER_ID, INPAINT_ID, PRIOR_ID, KandinskyGenerator  # deferred: heavy

    if model == "tiny":
        from dalle_data.generators.tiny import build_tiny_generator  # deferred: heavy

        tiny = build_tiny_generator(seed=0, device=device)
        if dtype != "auto":
            tiny.prior.to(dtype=default_dtype(device, dtype))
            tiny.decoder.to(dtype=default_dtype(device, dtype))
        return tiny
    dtype = default_dtype(device, dtype)
    # deferred: heavy (torch, diffusers)
    from dalle_data.generators.text2image import KANDINSKY_CLASSES, PRESETS, Text2ImageGenerator, pipeline_class_of

    if model in PRESETS:
        if prior is not None:
            raise ModelLoadError(f"--prior is only for Kandinsky 2.2 models; {model} has no prior")
        preset = PRESETS[model]
        return Text2ImageGenerator.from_pretrained(preset.repo, model=model, device=device, dtype=dtype,
                                                   defaults=preset.defaults)
    if model == "shapes-demo":
        generator = KandinskyGenerator.from_directory(shapes_demo_dir(), device=device, dtype=dtype)
        generator.model = "shapes-demo"
        return generator
    if model == "kandinsky-2-2":
        return KandinskyGenerator.from_pretrained(
            prior or PRIOR_ID, DECODER_ID, model=DECODER_ID, device=device, dtype=dtype, inpaint=INPAINT_ID
        )
    path = Path(model).expanduser()
    from dalle_data.generators.unclip import PIPELINE as STABLE_UNCLIP  # deferred: heavy
    from dalle_data.generators.unclip import PRESET_REPO, StableUnCLIPGenerator  # deferred: heavy

    if model == "stable-unclip" or (path.is_dir() and pipeline_class_of(path) == STABLE_UNCLIP):
        return StableUnCLIPGenerator.from_pretrained(PRESET_REPO if model == "stable-unclip" else path, model=model,
                                                     device=device, dtype=dtype)
    if path.is_dir() and not (path / "decoder").is_dir() and pipeline_class_of(path) not in (None, *KANDINSKY_CLASSES):
        if prior is not None:
            raise ModelLoadError(f"--prior is only for Kandinsky 2.2 models; {path} is a "
                                 f"{pipeline_class_of(path)}")
        return Text2ImageGenerator.from_pretrained(path, model=str(path), device=device, dtype=dtype)
    if path.is_dir():
        if prior is not None:
            raise ModelLoadError("--prior is only for hub decoders; a model directory carries its own prior/")
        return KandinskyGenerator.from_directory(path, device=device, dtype=dtype)
    # A hub id: its model_index.json names the pipeline; a Kandinsky 2.2 decoder is paired with the 2.2 prior
    # unless --prior says otherwise, any other pipeline is a text-to-image model.
    hub_class = _hub_pipeline_class(model)
    if hub_class == STABLE_UNCLIP:
        return StableUnCLIPGenerator.from_pretrained(model, model=model, device=device, dtype=dtype)
    if hub_class not in (None, *KANDINSKY_CLASSES):
        return Text2ImageGenerator.from_pretrained(model, model=model, device=device, dtype=dtype)
    return KandinskyGenerator.from_pretrained(
        prior or PRIOR_ID, model, model=model, device=device, dtype=dtype, inpaint=INPAINT_ID
    )


def _hub_pipeline_class(repo: str, local: bool = False) -> str | None:
    """The pipeline class a hub repo's ``model_index.json`` names (from the cache; the Hub when reachable and
    not ``local``); None when it cannot be read."""
    from huggingface_hub import hf_hub_download

    from dalle_data.hub import hub_offline, hub_reachable  # deferred: heavy

    for local_only in (True, False):
        if not local_only and (local or hub_offline() or not hub_reachable()):
            return None
        try:
            path = hf_hub_download(repo, "model_index.json", local_files_only=local_only)
        except Exception:  # noqa: BLE001 - not cached / not a diffusers repo: "unknown"
            continue
        from dalle_data.generators.text2image import pipeline_class_of  # deferred: heavy

        return pipeline_class_of(Path(path).parent)
    return None


def load_for_spec(spec: RunSpec, device: str) -> Generator:
    """The diffusers backend's loader (``dalle_data.backends``): weights in ``--dtype``, ``--option``s applied,
    ``--compile``d."""
    generator = load_generator(spec.model, prior=spec.prior, device=device, dtype=spec.dtype)
    apply_options(generator, spec)
    if spec.compile:
        if not isinstance(generator, Compilable):
            raise ModelLoadError(f"--compile: {generator.model} ({generator.backend}) cannot be compiled; "
                                 "drop --compile")
        generator.compile()
    return generator


def spec_hub_pieces(spec: RunSpec) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The diffusers backend's downloads for ``spec`` (``Backend.pieces``): the model's repos and the
    IP-Adapter, named at once when offline and missing from the cache."""
    return (hub_pieces(spec.model, spec.prior, "inpaint" in spec.modes)
            + ip_adapter_pieces(spec.model, spec.options.get("ip_adapter")))


def apply_options(generator: Generator, spec: RunSpec) -> None:
    """The diffusers backend's ``--option``s (``backends.DiffusersOptions``) on a loaded generator; an option the
    model cannot take is one line."""
    options = BACKENDS[spec.backend].option_values(spec.options)
    if options.negative_prompt is not None:
        if not isinstance(generator, NegativePrompt):
            raise ModelLoadError(f"--option negative_prompt: {generator.model} ({generator.backend}) takes no "
                                 "negative prompt; use a text-to-image model (Kandinsky 2.2, SD, SDXL, ...)")
        settings = resolve_settings(spec, generator.defaults)
        generator.set_negative_prompt(options.negative_prompt, settings)
    if options.ip_adapter is not None:
        if not isinstance(generator, ImagePrompt):
            raise ModelLoadError(f"--option ip_adapter: {generator.model} ({generator.backend}) takes no IP-Adapter; "
                                 "it is for SD 1.x and SDXL models (Kandinsky 2.2 makes variations itself)")
        generator.use_ip_adapter(None if options.ip_adapter == "default" else options.ip_adapter,
                                 scale=options.ip_adapter_scale)


def load_api_for_spec(spec: RunSpec, device: str) -> Generator:
    """The openai backend's loader: no weights, the key and URL are checked here."""
    return load_api_generator(spec)


def load_api_generator(spec: RunSpec) -> Generator:
    """The hosted images backend named by ``--backend openai`` (no weights to load; the key is checked here)."""
    from dalle_data.generators.openai_images import DEFAULT_QUALITY, OpenAIImageGenerator  # deferred: heavy
    from dalle_data.llm.client import Endpoint, RetryPolicy  # deferred: heavy

    endpoint = Endpoint(base_url=spec.base_url, timeout=spec.timeout, retry=RetryPolicy.from_env(spec.max_retries))
    options = BACKENDS[spec.backend].option_values(spec.options)
    return OpenAIImageGenerator(spec.model, endpoint=endpoint, quality=spec.quality or DEFAULT_QUALITY,
                                max_concurrency=spec.max_concurrency, batch=spec.openai_batch,
                                moderation=options.moderation, input_fidelity=options.input_fidelity)


def resolve_settings(spec: RunSpec, defaults: GenerationSettings) -> GenerationSettings:
    """The model's defaults, overridden by what the spec sets."""
    changes = {
        "width": spec.width, "height": spec.height, "num_inference_steps": spec.steps,
        "prior_num_inference_steps": spec.prior_steps, "guidance_scale": spec.guidance_scale,
    }
    settings = dataclasses.replace(defaults, **{k: v for k, v in changes.items() if v is not None})
    return settings
