"""Image decoding and tensor preparation shared by every image encoder."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageDecodeError(ValueError):
    """An image's bytes cannot be decoded (empty, truncated, not an image)."""


def decode_image(data: bytes, min_size: int | None = None) -> Image.Image:
    """Decode ``data`` fully into an RGB image; raise :class:`ImageDecodeError` with the reason otherwise.

    ``Image.open`` is lazy, so ``load()`` is forced here: a truncated JPEG fails now, not inside a worker later.
    With ``min_size``, a JPEG is decoded at the smallest of libjpeg's 1/2, 1/4, 1/8 scales that keeps both sides
    at least ``min_size`` pixels (``Image.draft``): a model that resizes to ``min_size`` anyway loses nothing, and
    decoding gets several times cheaper.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if min_size:
                image.draft("RGB", (min_size, min_size))
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"{type(error).__name__}: {error}") from error


def resize_for_model(image: Image.Image, size: int) -> np.ndarray:
    """Square bicubic resize to ``size`` → uint8 array [size, size, 3]."""
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def to_pixel_values(
    images: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Stack uint8 HWC arrays into a normalised float32 batch [B, 3, H, W]."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return batch.sub_(mean_t).div_(std_t)
