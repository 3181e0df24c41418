"""From ``--scorer`` to a loaded ``ClipScorer``.

Accepted names: ``auto`` (the scorer that goes with the model: ``tiny`` for
the tiny preset, else ``ViT-L-14/openai``), ``tiny``, an open_clip
``ARCH/TAG`` pair (``ViT-B-32/laion2b_s34b_b79k``), ``hf-hub:org/repo``, or a
local directory holding ``open_clip_config.json`` and weights (what
``save_scorer`` writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data.backends import BACKENDS, DEFAULT_SCORER
from dalle_data.errors import ModelLoadError, SpecError
from dalle_data.hub import load_with_hub_fallback

if TYPE_CHECKING:
    from dalle_data.scoring.clip import ClipScorer

SCORER_PRESETS: dict[str, str] = {
    "auto": f"the scorer that matches --model (tiny → tiny, shapes-demo → its CLIP, otherwise {DEFAULT_SCORER})",
    "tiny": "a tiny open_clip model with random weights, offline (tests, demos)",
    "shapes-demo": "the CLIP the shapes-demo model was trained with (its prior's towers)",
}
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def resolve_scorer_name(scorer: str, model: str, backend: str = "diffusers") -> str:
    """``auto`` → the scorer the backend pairs with ``model`` (``dalle_data.backends``); other names pass
    through."""
    if scorer == "auto":
        return BACKENDS[backend].scorer_for(model)
    return scorer


def check_scorer_name(name: str) -> None:
    """Cheap validation before anything heavy is imported."""
    if name in SCORER_PRESETS or name.startswith("hf-hub:") or Path(name).expanduser().is_dir():
        return
    if "/" not in name:
        raise SpecError(
            f"unknown scorer {name!r}: use auto, tiny, an open_clip ARCH/TAG pair such as {DEFAULT_SCORER}, "
            "hf-hub:org/repo or a local directory"
        )


def hub_pieces(name: str) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The hub repo a scorer name loads from: (what, name, repo, files that show it is cached)."""
    # loaded only when this scorer is asked for (it brings its own libraries)
    from dalle_data.hub import open_clip_repo

    if name in SCORER_PRESETS or Path(name).expanduser().is_dir():
        return []
    repo = open_clip_repo(name)
    if repo is None:
        return []
    files = ("open_clip_config.json",) if name.startswith("hf-hub:") else (
        "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.safetensors")
    return [("scorer", name, repo, files)]


def load_scorer(name: str, device: str = "cpu") -> ClipScorer:
    check_scorer_name(name)
    import open_clip

    # loaded only when this scorer is asked for (it brings its own libraries)
    from dalle_data.scoring.clip import ClipScorer

    if name == "tiny":
        model, preprocess = _tiny_model()
        return ClipScorer(model, preprocess, open_clip.get_tokenizer("ViT-B-32"), name="tiny", device=device)
    if name == "shapes-demo":
        # loaded only when this scorer is asked for (it brings its own libraries)
        from dalle_data.generators.registry import shapes_demo_dir
        from dalle_data.scoring.hf_clip import load_hf_towers

        return load_hf_towers(shapes_demo_dir(), device=device, name="shapes-demo")
    path = Path(name).expanduser()
    if path.is_dir() and (path / "prior" / "text_encoder").is_dir():
        # loaded only when this scorer is asked for (it brings its own libraries)
        from dalle_data.scoring.hf_clip import load_hf_towers

        return load_hf_towers(path, device=device, name=name)
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise ModelLoadError(f"{path} is not an open_clip model directory (no open_clip_config.json)")
        ident = f"local-dir:{path}"
        model, _, preprocess = open_clip.create_model_and_transforms(ident, device=device)
        return ClipScorer(model, preprocess, open_clip.get_tokenizer(ident), name=str(path), device=device)
    if name.startswith("hf-hub:"):
        model, _, preprocess = load_with_hub_fallback(
            lambda local: open_clip.create_model_and_transforms(name, device=device), what="scorer", name=name
        )
        return ClipScorer(model, preprocess, open_clip.get_tokenizer(name), name=name, device=device)
    arch, _, tag = name.partition("/")
    _check_arch_tag(open_clip, arch, tag)
    model, preprocess = load_with_hub_fallback(
        lambda local: _load_tagged(open_clip, arch, tag, local, device), what="scorer", name=name
    )
    return ClipScorer(model, preprocess, open_clip.get_tokenizer(arch), name=name, device=device)


def _check_arch_tag(open_clip: Any, arch: str, tag: str) -> None:
    if arch not in open_clip.list_models():
        raise SpecError(f"unknown open_clip architecture {arch!r} in --scorer (see open_clip.list_models())")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags and not Path(tag).is_file():
        raise SpecError(f"unknown pretrained tag {tag!r} for {arch}; known tags: {', '.join(tags) or 'none'}")


def _load_tagged(open_clip: Any, arch: str, tag: str, local: bool, device: str) -> tuple[Any, Any]:
    """``ARCH/TAG``: from the local Hub cache when ``local``, else download."""
    if not local or Path(tag).is_file():
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag, device=device)
        return model, preprocess
    from huggingface_hub import hf_hub_download

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    parts = str(cfg.get("hf_hub", "")).strip("/").split("/")
    if len(parts) < 2:
        raise FileNotFoundError(f"{arch}/{tag} has no Hub location")
    repo, names = "/".join(parts[:2]), ([parts[2]] if len(parts) > 2 else [])
    names += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for filename in names:
        try:
            path = hf_hub_download(repo, filename, local_files_only=True)
            break
        except Exception:  # noqa: BLE001 - try the next file name
            continue
    else:
        raise FileNotFoundError(f"{arch}/{tag} is not in the local cache")
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch, pretrained=path, device=device, force_quick_gelu=bool(cfg.get("quick_gelu", False)),
        image_mean=cfg.get("mean"), image_std=cfg.get("std"),
    )
    return model, preprocess


def _tiny_model(seed: int = 0) -> tuple[Any, Any]:
    import open_clip

    # loaded only when this scorer is asked for (it brings its own libraries)
    from dalle_data.generators.tiny import CLIP_MEAN, CLIP_STD, seeded

    with seeded(seed):
        model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    preprocess = open_clip.image_transform(32, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    return model.eval(), preprocess


def save_scorer(scorer: ClipScorer, path: str | Path, model_cfg: dict[str, Any] = TINY_CLIP_CONFIG) -> None:
    """Write an open_clip ``local-dir`` folder (config + safetensors) that ``--scorer PATH`` loads."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # loaded only when this scorer is asked for (it brings its own libraries)
    from dalle_data.generators.tiny import CLIP_MEAN, CLIP_STD

    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD}}
    (path / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.contiguous() for k, v in scorer.model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
