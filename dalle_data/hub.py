"""Loading weights from the Hugging Face Hub or a local directory, offline-aware.

Every model load goes through ``load_with_hub_fallback``: first from the
local cache (works offline, costs nothing), then — only when the Hub can be
reached — from the network. Without a network the user gets one line that
names the model and says how to proceed, instead of a minute of retries and a
traceback.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from dalle_data.errors import ModelLoadError

log = logging.getLogger(__name__)
T = TypeVar("T")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not Path(text).exists()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint can be opened."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_OFFLINE_PRESET = {"model": "--model shapes-demo", "scorer": "--scorer shapes-demo"}


def offline_message(what: str, name: str, reason: str) -> str:
    preset = _OFFLINE_PRESET.get(what, "--model shapes-demo")
    repo = (open_clip_repo(name) or name) if what == "scorer" else name
    return (
        f"cannot load {what} {name!r}: {reason}. Download it where there is a network "
        f"(`hf download {repo}`) and rerun with HF_HUB_OFFLINE=1, pass a local directory, "
        f"or use the offline preset ({preset})"
    )


def load_with_hub_fallback(load: Callable[[bool], T], *, what: str, name: str) -> T:
    """Call ``load(local_files_only)``: cache first, then the network if reachable."""
    try:
        return load(True)
    except Exception as err:  # noqa: BLE001 - any failure here means "not cached"
        log.debug("%s %s not loadable from the local cache: %s", what, name, err)
    if hub_offline():
        raise ModelLoadError(offline_message(what, name, "it is not in the local cache and HF_HUB_OFFLINE is set"))
    if not hub_reachable():
        raise ModelLoadError(offline_message(what, name, "no network (the Hugging Face Hub cannot be reached) and it is not in the local cache"))
    try:
        return load(False)
    except Exception as err:  # noqa: BLE001 - library errors become one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"cannot load {what} {name!r} from the Hub: {first}") from err


def cached(repo: str, filenames: tuple[str, ...]) -> bool:
    """Whether one of ``filenames`` of hub repo ``repo`` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        try:
            found = try_to_load_from_cache(repo, filename)
        except Exception:  # noqa: BLE001 - a malformed id is simply "not cached"
            return False
        if isinstance(found, str):
            return True
    return False


# Where common open_clip ARCH/TAG names download from (open_clip's pretrained table, checked by a test): known
# without importing open_clip, which imports torch and takes seconds, so an offline run fails at once.
OPEN_CLIP_REPOS = {
    "ViT-L-14/openai": "timm/vit_large_patch14_clip_224.openai",
    "ViT-B-32/openai": "timm/vit_base_patch32_clip_224.openai",
    "ViT-B-16/openai": "timm/vit_base_patch16_clip_224.openai",
    "ViT-B-32/laion2b_s34b_b79k": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "ViT-L-14/laion2b_s32b_b82k": "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
    "ViT-H-14/laion2b_s32b_b79k": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
}


def open_clip_repo(name: str) -> str | None:
    """The hub repo an open_clip ``ARCH/TAG`` (or ``hf-hub:org/repo``) downloads from, if it has one."""
    if name.startswith("hf-hub:"):
        return name[len("hf-hub:"):]
    if name in OPEN_CLIP_REPOS:
        return OPEN_CLIP_REPOS[name]
    arch, _, tag = name.partition("/")
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(arch, tag)
    except Exception:  # noqa: BLE001 - unknown names are reported elsewhere
        return None
    parts = str(cfg.get("hf_hub", "")).strip("/").split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else None


def check_offline(pieces: list[tuple[str, str, str, tuple[str, ...]]]) -> None:
    """Fail in one line naming every missing piece, when the hub cannot be reached.

    ``pieces`` are (what, name, hub repo, files that show it is cached). Pieces
    already in the local cache pass; with a network nothing is checked here
    (loading downloads what is missing).
    """
    missing = [(what, name, repo) for what, name, repo, files in pieces if not cached(repo, files)]
    if not missing:
        return
    if not hub_offline() and hub_reachable():
        return
    why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached"
    names = ", ".join(f"{what} {name!r}" for what, name, _ in missing)
    downloads = " && ".join(f"hf download {repo}" for repo in dict.fromkeys(repo for _, _, repo in missing))
    raise ModelLoadError(
        f"not in the local cache and {why}: {names}. Download them where there is a network (`{downloads}`) "
        "and rerun with HF_HUB_OFFLINE=1, pass local directories, or use the offline presets "
        "(--model shapes-demo, --scorer shapes-demo)"
    )


def quiet_libraries() -> None:
    """Silence diffusers/transformers/hub progress bars and chatter: we show our own."""
    import warnings

    import diffusers.utils.logging as dlog
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as tlog

    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    hub_utils.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(diffusers|transformers)\.")
