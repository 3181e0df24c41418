"""IP-Adapter image prompts for SD 1.x and SDXL pipelines: where the weights are, and loading them cleanly.

``Text2ImageGenerator.use_ip_adapter`` loads an adapter through diffusers' ``load_ip_adapter`` (the h94
layout: ``SUBFOLDER/WEIGHTS`` next to ``SUBFOLDER/image_encoder/``); this module finds the weights (the
family's h94/IP-Adapter by default, a folder laid out like it, a weight file, a hub id) and keeps what a load
changes in a pipeline, so that a failed load, or an unload, leaves the pipeline as it was (diffusers'
``unload_ip_adapter`` would also drop an image encoder the model came with).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dalle_data.errors import ModelLoadError
from dalle_data.hub import looks_like_hub_id


@dataclasses.dataclass(frozen=True)
class IPAdapterSource:
    """An IP-Adapter's weights: ``subfolder/weight_name`` of a hub repo or a local folder (``local``); its CLIP
    image encoder is ``subfolder/image_encoder``, as in h94/IP-Adapter."""

    repo: str
    subfolder: str
    weight_name: str
    local: bool = False

    @property
    def label(self) -> str:
        return "/".join(part for part in (self.repo, self.subfolder, self.weight_name) if part)


# The original authors' plain IP-Adapters (one CLIP image embedding → 4 image tokens), per pipeline family.
IP_ADAPTERS: dict[str, IPAdapterSource] = {
    "sdxl": IPAdapterSource("h94/IP-Adapter", "sdxl_models", "ip-adapter_sdxl.safetensors"),
    "sd": IPAdapterSource("h94/IP-Adapter", "models", "ip-adapter_sd15.safetensors"),
}
IP_ADAPTER_FAMILIES = {"StableDiffusionXLPipeline": "sdxl", "StableDiffusionPipeline": "sd"}
FAMILY_NAMES = {"sdxl": "SDXL", "sd": "SD 1.x"}
IP_ADAPTER_OPTION = ("--option ip_adapter=PATH|HUB_ID (or ip_adapter=default for h94/IP-Adapter) and "
                     "--option ip_adapter_scale=0.6")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def ip_adapter_family(pipe: Any) -> str | None:
    """``"sdxl"`` or ``"sd"`` when ``pipe`` takes an IP-Adapter (diffusers' ``load_ip_adapter``), else None."""
    if not hasattr(pipe, "load_ip_adapter") or getattr(pipe, "unet", None) is None:
        return None
    return IP_ADAPTER_FAMILIES.get(type(pipe).__name__)


def ip_adapter_source(source: str | Path | None, family: str) -> IPAdapterSource:
    """Where to load an IP-Adapter from: None or ``"default"`` is the family's h94/IP-Adapter; a weight file; a
    folder (the one weight file under it, or the family's file names); a hub id (the family's file names);
    ``owner/repo/subfolder/file.safetensors``."""
    default = IP_ADAPTERS[family]
    if source is None or str(source) == "default":
        return default
    path = Path(source).expanduser()
    if path.is_file():
        return IPAdapterSource(str(path.parent), "", path.name, local=True)
    if path.is_dir():
        return _weights_in(path, default)
    text = str(source)
    if looks_like_hub_id(text):
        return IPAdapterSource(text, default.subfolder, default.weight_name)
    parts = text.split("/")
    repo, subfolder, weight = "/".join(parts[:2]), "/".join(parts[2:-1]), parts[-1]
    if len(parts) > 2 and looks_like_hub_id(repo) and weight.endswith(WEIGHT_SUFFIXES):
        return IPAdapterSource(repo, subfolder, weight)
    raise ModelLoadError(f"IP-Adapter {text!r} is not a folder, a weight file or a hub id: pass the folder of an "
                         f"IP-Adapter (laid out as h94/IP-Adapter) or a hub id such as {default.repo}")


def _weights_in(folder: Path, default: IPAdapterSource) -> IPAdapterSource:
    """The weight file of the IP-Adapter in ``folder`` (image encoders' own weights aside)."""
    if (folder / default.subfolder / default.weight_name).is_file():
        return IPAdapterSource(str(folder), default.subfolder, default.weight_name, local=True)
    by_stem: dict[Path, Path] = {}
    for file in sorted(folder.rglob("*")):
        inner = file.relative_to(folder)
        if file.suffix not in WEIGHT_SUFFIXES or not file.is_file() or "image_encoder" in inner.parts:
            continue
        if inner.with_suffix("") not in by_stem or file.suffix == ".safetensors":
            by_stem[inner.with_suffix("")] = inner  # the same weights as .bin and .safetensors: one
    found = sorted(by_stem.values())
    if not found:
        raise ModelLoadError(f"no IP-Adapter weights (*.safetensors, *.bin) in {folder}: pass a folder laid out as "
                             f"h94/IP-Adapter ({default.subfolder}/{default.weight_name} next to "
                             f"{default.subfolder}/image_encoder/), e.g. `hf download {default.repo} --include "
                             f"'{default.subfolder}/*' --local-dir DIR`")
    if len(found) > 1:
        names = ", ".join(str(f) for f in found[:5]) + (", ..." if len(found) > 5 else "")
        raise ModelLoadError(f"several IP-Adapter weight files in {folder} ({names}): pass the one to use "
                             "(ip_adapter=PATH/TO/FILE)")
    subfolder = found[0].parent.as_posix()
    return IPAdapterSource(str(folder), "" if subfolder == "." else subfolder, found[0].name, local=True)


def adapter_state(pipe: Any) -> dict[str, Any]:
    """What loading an IP-Adapter changes in a pipeline (diffusers' ``unload_ip_adapter`` would drop an image
    encoder the model came with, and a failed load leaves a half-changed UNet)."""
    unet = unwrapped_unet(pipe)
    return {"processors": dict(unet.attn_processors), "encoder_hid_proj": unet.encoder_hid_proj,
            "encoder_hid_dim_type": unet.config.encoder_hid_dim_type,
            "image_encoder": getattr(pipe, "image_encoder", None),
            "feature_extractor": getattr(pipe, "feature_extractor", None)}


def restore_adapter_state(pipe: Any, state: dict[str, Any]) -> None:
    unet = unwrapped_unet(pipe)
    unet.set_attn_processor(dict(state["processors"]))  # it empties the dict it is given
    unet.encoder_hid_proj = state["encoder_hid_proj"]
    unet.config.encoder_hid_dim_type = state["encoder_hid_dim_type"]  # as diffusers' loader sets it
    pipe.register_modules(image_encoder=state["image_encoder"], feature_extractor=state["feature_extractor"])


def unwrapped_unet(pipe: Any) -> Any:
    return getattr(pipe.unet, "_orig_mod", pipe.unet)  # under torch.compile: the module itself


def project(pipe: Any, embeds: Any) -> None:
    import torch

    with torch.inference_mode():
        pipe.unet.encoder_hid_proj([embeds[None, None]])


def blank_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (64, 64))


def reason(err: BaseException) -> str:
    """The telling line of a library error (a ``size mismatch`` of a state dict rather than its header)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    line = next((line for line in lines if "mismatch" in line or "shape" in line), lines[0])
    return line.split(". ")[0].rstrip(".")
