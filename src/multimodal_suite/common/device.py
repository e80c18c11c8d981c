"""Device choice (cuda, then mps, then cpu) and the autocast dtype that suits it."""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import ContextManager

import torch

logger = logging.getLogger(__name__)


def pick_device(preferred: str | None = None) -> torch.device:
    """Return ``preferred`` when given (``"auto"``/None means choose), else cuda → mps → cpu."""
    if preferred and preferred != "auto":
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, mixed_precision: bool = True) -> torch.dtype | None:
    """The reduced-precision dtype for ``device``: fp16 on cuda/mps, bf16 on cpu; None when disabled."""
    if not mixed_precision:
        return None
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.bfloat16


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """``torch.autocast`` for ``device`` with ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
