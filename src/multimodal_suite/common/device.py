"""Device choice (cuda, then mps, then cpu) and the autocast dtype that suits it.

``mixed_precision`` settings are ``auto`` (the default everywhere: reduced precision only where the device computes
it natively), ``true`` (always autocast: fp16 on GPUs, bf16 on CPUs, even where a CPU has to emulate bf16) or
``false`` (fp32). On an AVX2-only CPU bf16 autocast is several times slower than fp32 (oneDNN emulates it), so
``auto`` keeps such CPUs in fp32; CPUs with AVX512-BF16 or AMX get bf16.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from functools import lru_cache
from typing import ContextManager, Literal, Union

import torch

logger = logging.getLogger(__name__)

MixedPrecision = Union[bool, Literal["auto"]]
"""A ``mixed_precision`` setting: ``auto``, or an explicit on/off."""

_logged: set[tuple[str, str, str]] = set()


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


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX) that oneDNN uses for bf16 matmuls."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: no fast bf16 either
        return False


def _check_setting(mixed_precision: MixedPrecision) -> MixedPrecision:
    if isinstance(mixed_precision, bool) or mixed_precision == "auto":
        return mixed_precision
    raise ValueError(f"mixed_precision must be auto, true or false; got {mixed_precision!r}")


def autocast_dtype(device: torch.device, mixed_precision: MixedPrecision = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` under the setting ``mixed_precision``, or None for fp32.

    ``auto``: fp16 on cuda/mps; on cpu bf16 where :func:`cpu_supports_bf16`, else fp32. ``True`` forces fp16 on
    cuda/mps and bf16 on cpu; ``False`` is fp32. The choice and its reason are logged once per device and setting.
    """
    setting = _check_setting(mixed_precision)
    if setting is False:
        dtype, reason = None, "mixed_precision: false"
    elif device.type in ("cuda", "mps"):
        dtype, reason = torch.float16, f"mixed_precision: {str(setting).lower()} on {device.type}"
    elif setting is True:
        native = "native" if cpu_supports_bf16() else "emulated, no bf16 instructions on this CPU: slower than fp32"
        dtype, reason = torch.bfloat16, f"mixed_precision: true forces bf16 on cpu ({native})"
    elif cpu_supports_bf16():
        dtype, reason = torch.bfloat16, "mixed_precision: auto, this CPU has bf16 instructions"
    else:
        dtype, reason = None, ("mixed_precision: auto, this CPU has no bf16 instructions (bf16 would be emulated, "
                               "slower than fp32); set mixed_precision: true to force bf16")
    key = (device.type, str(setting), str(dtype))
    if key not in _logged:
        _logged.add(key)
        logger.info("Precision on %s: %s (%s)", device.type, "fp32" if dtype is None else str(dtype)[6:], reason)
    return dtype


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """``torch.autocast`` for ``device`` with ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
