"""How far the generator is from what the device can do: FLOPs per stage, achieved FLOP/s, share of a limit.

``StageMeter(generator)`` puts forward hooks on the generator's networks, by
stage: ``prior`` (the unCLIP prior and its text encoder), ``text_encoder`` (a
text-to-image pipeline's), ``denoiser`` (the decoder UNet or transformer, one
call per step, both halves of guidance in one batch) and ``image_decoder``
(MoVQ or VAE). While it is attached (a context manager: the hooks are
removed after the run, the generator is left as it was) it adds up each
stage's seconds and calls. The first call of each stage at each input shape
runs under ``torch.utils.flop_counter.FlopCounterMode``: its FLOPs, counted
once, stand for every call of that shape (those counted calls are timed
apart and left out of the achieved rate, which the counter slows). On CUDA
each call is synchronized before its clock stops, so the seconds are the
kernels', not the launches'.

``practical_limit(device, dtype)`` is the FLOP/s of a large dense matmul at
that dtype on that device (best of a few), measured once and remembered in
``$DALLE_DATA_HOME/matmul-limit.json`` as the batch probe is; the summary's
``share_of_limit`` is the achieved rate over it. A compiled network is not
counted (the counter sees no aten calls in a compiled graph): its stage
reports seconds and calls only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle_data.files import atomic_write_bytes, read_json_object

log = logging.getLogger(__name__)

LIMIT_FILE = "matmul-limit.json"
MATMUL_SIDE = 2048  # 17.2 GFLOP a product: long enough to time, short enough to probe in a second on a CPU
STAGES = ("prior", "text_encoder", "denoiser", "image_decoder")
_MODULES = {  # stage -> the pipeline attributes that hold its networks
    "prior": ("prior", "text_encoder", "image_encoder"),
    "text_encoder": ("text_encoder", "text_encoder_2", "text_encoder_3"),
    "denoiser": ("unet", "transformer"),
    "image_decoder": ("movq", "vae"),
}


@dataclass
class StageCounts:
    calls: int = 0
    seconds: float = 0.0  # every call's
    flops: float = 0.0  # every call's (each shape's count times its calls), when known
    timed_flops: float = 0.0  # of the calls not counted (the counter slows the ones it counts)
    timed_seconds: float = 0.0
    counted: bool = True  # False: some call's FLOPs are unknown (a compiled network)
    shapes: dict[Any, float] = field(default_factory=dict)


def stage_modules(generator: Any) -> dict[str, list[Any]]:
    """The networks of each stage of ``generator`` (Kandinsky 2.2: prior and decoder pipelines; a text-to-image
    pipeline: ``pipe``); empty for a generator without torch networks (a hosted API)."""
    found: dict[str, list[Any]] = {}
    seen: set[int] = set()
    prior = getattr(generator, "prior", None)
    pipes = [("prior", prior)] if prior is not None and hasattr(prior, "components") else []
    for name in ("decoder", "pipe"):
        pipe = getattr(generator, name, None)
        if pipe is not None and hasattr(pipe, "components"):
            pipes.append((name, pipe))
    for kind, pipe in pipes:
        for stage, attributes in _MODULES.items():
            if (kind == "prior") != (stage == "prior"):
                continue
            for attribute in attributes:
                module = getattr(pipe, attribute, None)
                if module is not None and hasattr(module, "register_forward_hook") and id(module) not in seen:
                    seen.add(id(module))
                    found.setdefault(stage, []).append(module)
    return found


class StageMeter:
    """Seconds, calls and FLOPs of each stage while attached (``with StageMeter(generator) as meter``).

    Each network's ``forward`` (an image decoder's ``decode``, which the pipelines call instead) is wrapped on
    the instance for as long as the meter is attached; ``images`` counts what the image decoder decoded."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.modules = stage_modules(generator)
        self.counts: dict[str, StageCounts] = {s: StageCounts() for s in self.modules}
        self.images = 0
        self._patched: list[tuple[Any, str]] = []
        self._depth = 0
        self.cuda = str(getattr(generator, "device", "cpu")).startswith("cuda")

    def __enter__(self) -> StageMeter:
        for stage, modules in self.modules.items():
            method = "decode" if stage == "image_decoder" else "forward"
            for module in modules:
                original = getattr(module, method, None)
                if original is None or method in vars(module):
                    continue  # nothing to time, or already wrapped (by another meter)
                setattr(module, method, self._wrap(stage, module, original))
                self._patched.append((module, method))
        return self

    def __exit__(self, *exc: Any) -> None:
        for module, method in self._patched:
            vars(module).pop(method, None)  # the class's own method again
        self._patched.clear()

    def _wrap(self, stage: str, module: Any, original: Any) -> Any:
        counts = self.counts[stage]
        compiled = _compiled(module)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:  # inside another timed call (a text encoder inside a prior's call): counted there
                return original(*args, **kwargs)
            key = (id(module), _shape_key(args, kwargs))
            counter = None
            if key not in counts.shapes and not compiled:
                from torch.utils.flop_counter import FlopCounterMode

                counter = FlopCounterMode(display=False)
            self._sync()
            started = time.perf_counter()
            self._depth += 1
            try:
                if counter is not None:
                    with counter:
                        out = original(*args, **kwargs)
                else:
                    out = original(*args, **kwargs)
            finally:
                self._depth -= 1
            self._sync()
            seconds = time.perf_counter() - started
            counts.calls += 1
            counts.seconds += seconds
            if stage == "image_decoder":
                self.images += _batch(args, kwargs)
            if counter is not None:
                counts.shapes[key] = float(counter.get_total_flops())
                counts.flops += counts.shapes[key]
            elif key in counts.shapes:
                counts.flops += counts.shapes[key]
                counts.timed_flops += counts.shapes[key]
                counts.timed_seconds += seconds
            else:
                counts.counted = False
            return out

        return timed

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def report(self, limit: float | None) -> dict[str, Any]:
        """Per stage: calls, seconds, GFLOP per image, achieved GFLOP/s and its share of ``limit`` (FLOP/s)."""
        stages: dict[str, Any] = {}
        for stage in STAGES:
            c = self.counts.get(stage)
            if c is None or not c.calls:
                continue
            rate = c.timed_flops / c.timed_seconds if c.timed_seconds > 0 and c.timed_flops else None
            stages[stage] = {
                "calls": c.calls, "seconds": round(c.seconds, 4),
                "gflop_per_image": round(c.flops / self.images / 1e9, 4) if c.counted and self.images else None,
                "gflop_per_s": round(rate / 1e9, 2) if rate else None,
                "share_of_limit": round(rate / limit, 4) if rate and limit else None,
            }
        return stages


def _batch(args: Any, kwargs: Any) -> int:
    """The batch size of a call: its first tensor argument's first dimension."""
    for value in (*args, *kwargs.values()):
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape):
            return int(shape[0])
    return 0


def _compiled(module: Any) -> bool:
    return type(module).__name__ == "OptimizedModule" or hasattr(module, "_orig_mod")


def _shape_key(args: Any, kwargs: Any) -> tuple[Any, ...]:
    """The shapes and dtypes of a call's tensor arguments: what its FLOPs depend on."""
    out: list[Any] = []

    def walk(value: Any) -> None:
        shape = getattr(value, "shape", None)
        if shape is not None and hasattr(value, "dtype"):
            out.append((tuple(shape), str(value.dtype)))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                walk(value[k])

    walk(args)
    walk(kwargs)
    return tuple(out)


# --- the device's practical limit ---------------------------------------------------------------------------------

def limit_key(device: str, dtype: Any) -> str:
    import torch

    name = str(device)
    if name.startswith("cuda") and torch.cuda.is_available():
        name += ":" + torch.cuda.get_device_name(torch.device(name))
    elif name == "cpu":
        name += f":{os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return f"{name}|{str(dtype).removeprefix('torch.')}|torch {torch.__version__}"


def practical_limit(device: str, dtype: Any, home: Path, probe: bool = True) -> float | None:
    """FLOP/s of a dense ``MATMUL_SIDE``³ matmul at ``dtype`` on ``device``: remembered, else measured (and
    remembered) when ``probe``; None when the device cannot run that dtype."""
    key = limit_key(device, dtype)
    path = home / LIMIT_FILE
    known = read_json_object(path) or {}
    if isinstance(known.get(key), int | float):
        return float(known[key])
    if not probe:
        return None
    try:
        value = measure_matmul(device, dtype)
    except (RuntimeError, TypeError) as err:  # a dtype the device has no kernel for
        log.info("no matmul probe for %s: %s", key, err)
        return None
    known[key] = round(value, 1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(known, indent=2, sort_keys=True) + "\n").encode())
    except OSError as err:
        log.info("cannot remember the matmul limit in %s: %s", path, err)
    return value


def measure_matmul(device: str, dtype: Any, side: int = MATMUL_SIDE, repeats: int = 5) -> float:
    """Best FLOP/s of ``repeats`` products of two ``side``² matrices (one warm-up first)."""
    import torch

    a = torch.randn(side, side, device=device).to(dtype)
    b = torch.randn(side, side, device=device).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        for i in range(repeats + 1):
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            (a @ b).sum().item()  # .item() waits for the product
            elapsed = time.perf_counter() - t
            if i:
                best = min(best, elapsed)
    return 2.0 * side**3 / best

