"""Where tensors live: the torch device of ``params.device`` and how batches and models get there.

CUDA is used when present (``device: auto``): bf16 autocast, channels_last and non-blocking copies
there; on CPU everything stays float32 so a fixed seed gives the same bytes on every run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from qsenn_core.errors import ParamsError

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` (or ``None``) -> CUDA when available else CPU; ``cuda`` without a GPU is a
    :class:`ParamsError` naming the ``device`` key. A ``torch.device`` passes through."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICE_CHOICES:
        raise ParamsError(f"device: {name!r} is not one of {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device: cuda was requested but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA, nothing on CPU (CPU results stay bit-reproducible in float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(images: Tensor, device: torch.device) -> Tensor:
    """Move a batch to ``device``: non-blocking and channels_last on CUDA."""
    if device.type == "cuda":
        memory_format = torch.channels_last if images.ndim == 4 else torch.preserve_format
        return images.to(device, non_blocking=True, memory_format=memory_format)
    return images.to(device)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` (channels_last on CUDA); returns it."""
    if device.type == "cuda":
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (0: leave torch's setting)."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
