"""``--batch-size auto`` (the default): the batch that makes the most images per second and fits.

A short probe generates one batch of each size in 1, 2, 4, … (up to
``MAX_BATCH`` and to the run's first wave), with the run's model, size and
guidance but only ``PROBE_STEPS`` denoising steps: the per-step cost grows
with the batch the same way at any step count, so the ranking holds and the
probe stays cheap. It stops at the first out-of-memory error and once two
sizes in a row bring less than ``GAIN`` more throughput. The winner is
remembered per backend, model, device, torch version and image size in
``$DALLE_DATA_HOME/batch-sizes.json``, so the probe runs once per machine and
model. A hosted API gets a batch of ``--max-concurrency`` requests (at
least 8): there is nothing to probe.

A batch size never changes which images a run makes (ids, seeds, prompts),
only how many are made per call; it is outside the spec hash.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data.backends import BACKENDS
from dalle_data.execution.plan import derive_seed
from dalle_data.execution.stages import free_accelerator_memory, is_out_of_memory
from dalle_data.llm.cache import home
from dalle_data.files import read_json_object
from dalle_data.writers.base import atomic_write_bytes

if TYPE_CHECKING:
    from dalle_data.config import RunSpec
    from dalle_data.execution.stages import Stages
    from dalle_data.planning import Plan

log = logging.getLogger(__name__)

MAX_BATCH = 64
PROBE_STEPS = 2
GAIN = 1.05
CACHE_FILE = "batch-sizes.json"
API_BATCH = 8


def batch_size_for(spec: RunSpec, stages: Stages, the_plan: Plan) -> int:
    """The batch size a run uses (see the module docstring)."""
    backend = BACKENDS[spec.backend]
    if getattr(spec, "openai_batch", False):  # one Batch API job per call: a shard's worth
        return spec.shard_size if spec.batch_size == "auto" else int(spec.batch_size)
    if not backend.needs_device:  # an API backend runs a batch's requests concurrently: a batch holds them all
        return max(API_BATCH if spec.batch_size == "auto" else int(spec.batch_size), spec.max_concurrency)
    if spec.batch_size != "auto":
        return int(spec.batch_size)
    first_wave = sum(s.target for s in the_plan.slots())
    return auto_batch_size(stages, limit=max(1, min(MAX_BATCH, first_wave)))


def cache_path() -> Path:
    return home() / CACHE_FILE


def cache_key(stages: Stages) -> str:
    import torch

    g, s = stages.generator, stages.settings
    device = str(getattr(g, "device", "cpu"))
    if device.startswith("cuda") and torch.cuda.is_available():
        device += ":" + torch.cuda.get_device_name(torch.device(device))
    return f"{g.backend}|{g.model}|{device}|torch {torch.__version__}|{s.width}x{s.height}"


def auto_batch_size(stages: Stages, limit: int = MAX_BATCH) -> int:
    """The remembered best batch size for these stages, else a probe's (then remembered)."""
    key = cache_key(stages)
    path = cache_path()
    cached = _read(path)
    if isinstance(cached.get(key), dict) and isinstance(cached[key].get("batch_size"), int):
        return max(1, min(cached[key]["batch_size"], limit))
    best, rates = probe(stages, limit)
    if limit >= MAX_BATCH or best < limit:  # a probe cut short by a small run says little about larger batches
        cached[key] = {"batch_size": best, "images_per_second": {str(b): round(r, 3) for b, r in rates.items()},
                       "probe_steps": PROBE_STEPS, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _write(path, cached)
    log.info("batch size %d (probe: %s)", best, ", ".join(f"{b}: {r:.1f} img/s" for b, r in rates.items()))
    return best


def probe(stages: Stages, limit: int = MAX_BATCH) -> tuple[int, dict[int, float]]:
    """Images per second at batch sizes 1, 2, 4, …; returns the best size and every measurement."""
    settings = replace(stages.settings, num_inference_steps=min(PROBE_STEPS, stages.settings.num_inference_steps),
                       prior_num_inference_steps=min(PROBE_STEPS, stages.settings.prior_num_inference_steps))
    generator = stages.generator
    prompt = "a photo of a thing"
    text = "text-to-image" in getattr(generator, "capabilities", frozenset({"text-to-image"}))
    if not text:  # a variation-only model (Stable unCLIP) is probed with variations of a plain picture
        from PIL import Image

        source = Image.new("RGB", (settings.width, settings.height), (128, 128, 128))

    def once(n: int) -> float:
        seeds = [derive_seed("batch-size probe", n, i) for i in range(n)]
        t = time.perf_counter()
        if text:
            generator([prompt] * n, seeds, settings)
        else:
            generator.variation([[source]] * n, [[1.0]] * n, seeds, settings)
        return n / max(time.perf_counter() - t, 1e-9)

    once(1)  # warm-up: first-call costs (allocations, kernels, compilation) are not throughput
    rates: dict[int, float] = {}
    size, flat = 1, 0
    while size <= limit:
        try:
            rate = once(size)
        except Exception as err:  # noqa: BLE001 - out of memory ends the probe; anything else is real
            if not is_out_of_memory(err):
                raise
            free_accelerator_memory()
            break
        flat = flat + 1 if rates and rate < max(rates.values()) * GAIN else 0
        rates[size] = rate
        if flat >= 2:
            break
        size *= 2
    best = max(rates, key=lambda b: (rates[b], -b))
    return best, rates


def _read(path: Path) -> dict[str, Any]:
    return read_json_object(path) or {}


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    except Exception as err:  # noqa: BLE001 - a cache that cannot be written only costs a probe next time
        log.info("cannot remember the batch size in %s: %s", path, err)
