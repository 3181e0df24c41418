"""Choosing the torch device and precision."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dalle_data.errors import DalleDataError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; validates the rest."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DalleDataError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu or --device auto")
        return name
    if name in {"cpu", "mps"}:
        if name == "mps" and not torch.backends.mps.is_available():
            raise DalleDataError("--device mps: no Apple GPU is available; use --device cpu or --device auto")
        return name
    raise DalleDataError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


DTYPES = ("auto", "fp16", "bf16", "fp32")


def default_dtype(device: str, choice: str = "auto") -> "torch.dtype":
    """``--dtype``: auto is half precision on GPU (what the models are trained and served in), fp32 on CPU;
    bf16 keeps fp32's range (no overflow to NaN) at half the memory, on GPUs that have it."""
    import torch

    if choice == "fp16":
        return torch.float16
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp32":
        return torch.float32
    return torch.float16 if device.startswith("cuda") else torch.float32
