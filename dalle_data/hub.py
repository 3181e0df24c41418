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
    return (
        f"cannot load {what} {name!r}: {reason}. Download it where there is a network "
        f"(`hf download {name}`) and rerun with HF_HUB_OFFLINE=1, pass a local directory, "
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
