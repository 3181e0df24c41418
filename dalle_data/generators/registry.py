"""From ``--model`` to a generator: presets, hub ids and local directories."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from dalle_data.backends import DIFFUSERS_PRESETS
from dalle_data.errors import ModelLoadError, SpecError
from dalle_data.generators.base import GenerationSettings
from dalle_data.hub import looks_like_hub_id

if TYPE_CHECKING:
    from dalle_data.config import RunSpec
    from dalle_data.generators.base import Generator

# Preset name → what it means. ``tiny`` is built offline from configs.
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
            raise SpecError(f"--model {model}: a model must be a directory (with prior/ and decoder/), not a file")
        return
    if any(sep in model for sep in ("/", "\\")) or model.startswith((".", "~")):
        raise SpecError(f"--model {model}: no such directory")
    raise SpecError(
        f"unknown model {model!r}: use a preset ({', '.join(MODEL_PRESETS)}), "
        "a Hugging Face hub id (org/name) or a local directory"
    )


def hub_pieces(model: str, prior: str | None, inpaint: bool) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The hub repos ``--model`` loads from: (what, name, repo, files that show it is cached)."""
    from dalle_data.generators.kandinsky import DECODER_ID, INPAINT_ID, PRIOR_ID

    if model in ("tiny", "shapes-demo") or Path(model).expanduser().is_dir() or not (
        model == "kandinsky-2-2" or looks_like_hub_id(model)
    ):
        return []
    decoder = DECODER_ID if model == "kandinsky-2-2" else model
    repos = [("prior", prior or PRIOR_ID), ("decoder", decoder)] + ([("inpainting decoder", INPAINT_ID)] if inpaint else [])
    return [(what, repo, repo, ("model_index.json",)) for what, repo in repos if not Path(repo).is_dir()]


def load_generator(model: str, *, prior: str | None = None, device: str = "cpu", seed: int = 0,
                   dtype: str = "auto") -> Generator:
    """Load the generator named by ``model`` onto ``device`` (``dtype`` auto: half precision on CUDA)."""
    check_model_name(model)
    from dalle_data.device import default_dtype
    from dalle_data.generators.kandinsky import DECODER_ID, INPAINT_ID, PRIOR_ID, KandinskyGenerator

    if model == "tiny":
        from dalle_data.generators.tiny import build_tiny_generator

        tiny = build_tiny_generator(seed=0, device=device)
        if dtype != "auto":
            tiny.prior.to(dtype=default_dtype(device, dtype))
            tiny.decoder.to(dtype=default_dtype(device, dtype))
        return tiny
    dtype = default_dtype(device, dtype)
    if model == "shapes-demo":
        generator = KandinskyGenerator.from_directory(shapes_demo_dir(), device=device, dtype=dtype)
        generator.model = "shapes-demo"
        return generator
    if model == "kandinsky-2-2":
        return KandinskyGenerator.from_pretrained(
            prior or PRIOR_ID, DECODER_ID, model=DECODER_ID, device=device, dtype=dtype, inpaint=INPAINT_ID
        )
    path = Path(model).expanduser()
    if path.is_dir():
        if prior is not None:
            raise ModelLoadError("--prior is only for hub decoders; a model directory carries its own prior/")
        return KandinskyGenerator.from_directory(path, device=device, dtype=dtype)
    # A hub id: taken as a Kandinsky 2.2 decoder, paired with the 2.2 prior unless --prior says otherwise.
    return KandinskyGenerator.from_pretrained(
        prior or PRIOR_ID, model, model=model, device=device, dtype=dtype, inpaint=INPAINT_ID
    )


def load_for_spec(spec: RunSpec, device: str) -> Generator:
    """The diffusers backend's loader (``dalle_data.backends``): weights in ``--dtype``, ``--compile``d."""
    generator = load_generator(spec.model, prior=spec.prior, device=device, dtype=spec.dtype)
    if spec.compile:
        generator.compile()  # type: ignore[attr-defined]
    return generator


def load_api_for_spec(spec: RunSpec, device: str) -> Generator:
    """The openai backend's loader: no weights, the key and URL are checked here."""
    return load_api_generator(spec)


def load_api_generator(spec: RunSpec) -> Generator:
    """The hosted images backend named by ``--backend openai`` (no weights to load; the key is checked here)."""
    from dalle_data.generators.openai_images import DEFAULT_QUALITY, OpenAIImageGenerator
    from dalle_data.llm.client import Endpoint, RetryPolicy

    endpoint = Endpoint(base_url=spec.base_url, timeout=spec.timeout, retry=RetryPolicy.from_env(spec.max_retries))
    return OpenAIImageGenerator(spec.model, endpoint=endpoint, quality=spec.quality or DEFAULT_QUALITY,
                                max_concurrency=spec.max_concurrency)


def resolve_settings(spec: RunSpec, defaults: GenerationSettings) -> GenerationSettings:
    """The model's defaults, overridden by what the spec sets."""
    changes = {
        "width": spec.width, "height": spec.height, "num_inference_steps": spec.steps,
        "prior_num_inference_steps": spec.prior_steps, "guidance_scale": spec.guidance_scale,
    }
    settings = dataclasses.replace(defaults, **{k: v for k, v in changes.items() if v is not None})
    return settings
