"""Image decoding and tensor preparation shared by every image encoder.

:func:`decode_image` is the one way the project decodes image bytes it did not make: every failure of the bytes
(empty, truncated, random bytes, not an image, a header past the pixel limit, PIL's own decompression-bomb guard, a
zero-sized image) becomes an :class:`ImageDecodeError` with the reason, so callers need one ``except`` for their
per-item guard. The pixel limit is checked on the header size before any pixel is decoded, so an image that claims
60000 × 60000 pixels in a few hundred bytes is refused without allocating its claimed size.
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Literal, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_IMAGE_PIXELS = 80_000_000
"""Pixels an image's header may claim (``max_image_pixels`` of every system that decodes images).

80 M pixels is above any real input (a 600-dpi tabloid comic scan is 6600 × 10200 ≈ 67 M pixels, a 61 MP camera
photo 61 M), an RGB decode at the limit takes 240 MB per decode thread, and it stays under PIL's own warning
threshold (``Image.MAX_IMAGE_PIXELS``, 89.5 M pixels by default), so with the defaults PIL's guard never fires for an
image the project accepts and the outcome does not depend on how warnings are filtered.
"""

DecodeFailure = Literal["empty", "too_large", "undecodable"]


class ImageDecodeError(ValueError):
    """An image's bytes cannot be used: ``reason`` says why for a report, ``kind`` sorts it.

    ``kind`` is ``empty`` (0 bytes), ``too_large`` (past the pixel limit, or refused by PIL's bomb guard) or
    ``undecodable`` (truncated, corrupt, not an image, zero-sized).
    """

    def __init__(self, reason: str, kind: DecodeFailure = "undecodable") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: DecodeFailure = kind

    def __reduce__(self):  # keeps ``kind`` across pickling (thread pools are fine, process pools pickle)
        return type(self), (self.reason, self.kind)


def pixel_limit(max_pixels: int) -> int:
    """``max_pixels`` checked as a pixel limit; a ValueError naming the setting otherwise.

    Raised outside any per-item guard on purpose: a wrong setting is one error for the run, not one reject per image.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(f"max_image_pixels must be a whole number of pixels >= 1, got {max_pixels!r}; "
                         f"set it in conf/<env>/parameters_*.yml (default {DEFAULT_MAX_IMAGE_PIXELS})")
    return int(max_pixels)


def size_problem(size: tuple[int, int], max_pixels: int) -> ImageDecodeError | None:
    """Why an image of ``size`` (width, height) must not be decoded under ``max_pixels``, or None."""
    width, height = size
    if width < 1 or height < 1:
        return ImageDecodeError(f"zero-sized image ({width} × {height} pixels)")
    if width * height > max_pixels:
        return ImageDecodeError(
            f"image too large: {width} × {height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            f"(max_image_pixels); skipped without decoding", kind="too_large")
    return None


def _failure(error: Exception, data: bytes) -> ImageDecodeError:
    """An exception raised by PIL on ``data`` → the :class:`ImageDecodeError` a report shows."""
    if isinstance(error, UnidentifiedImageError):
        return ImageDecodeError(f"not a recognised image format; starts with {data[:24]!r}")
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # PIL's global guard (stricter than max_image_pixels, or a warning turned into an error by a filter)
        return ImageDecodeError(f"image too large: {error}", kind="too_large")
    return ImageDecodeError(f"{type(error).__name__}: {error}")


@contextmanager
def _checked_open(data: bytes, max_pixels: int) -> Iterator[Image.Image]:
    """The image of ``data``, opened (header only) and its size checked; any failure inside is an ImageDecodeError.

    Any exception while PIL reads untrusted bytes (OSError, SyntaxError, struct.error, EOFError, MemoryError, its
    bomb error ...) is the image's failure, never the run's: all of them become the reason of an ImageDecodeError.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)", kind="empty")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as error:
        raise _failure(error, data) from error
    with image:
        problem = size_problem(image.size, max_pixels)
        if problem is not None:
            raise problem
        try:
            yield image
        except ImageDecodeError:
            raise
        except Exception as error:
            raise _failure(error, data) from error


def decode_image(
    data: bytes, min_size: int | None = None, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, mode: str = "RGB"
) -> Image.Image:
    """Decode ``data`` fully into an image of ``mode``; raise :class:`ImageDecodeError` with the reason otherwise.

    The header is read first and its size checked against ``max_pixels`` before anything is decoded. ``load()`` is
    then forced: a truncated JPEG fails now, not inside a worker later. With ``min_size``, a JPEG is decoded at the
    smallest of libjpeg's 1/2, 1/4, 1/8 scales that keeps both sides at least ``min_size`` pixels (``Image.draft``):
    a model that resizes to ``min_size`` anyway loses nothing, and decoding gets several times cheaper.

    Raises:
        ImageDecodeError: the bytes cannot be used (any failure of PIL on them, with its reason).
        ValueError: ``max_pixels`` is not a pixel limit (a setting, not the image, is wrong).
    """
    limit = pixel_limit(max_pixels)
    with _checked_open(data, limit) as image:
        if min_size:
            image.draft("RGB", (min_size, min_size))
        image.load()
        decoded = image.convert(mode)
    problem = size_problem(decoded.size, limit)
    if problem is not None:
        raise problem
    return decoded


def verify_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Raise :class:`ImageDecodeError` unless ``data`` decodes; cheaper than :func:`decode_image`.

    JPEGs are decoded at 1/8 scale (``draft``): the entropy-coded data is still read to the end, so a truncated file
    fails, at a fraction of the cost of a full decode; nothing is converted.
    """
    with _checked_open(data, pixel_limit(max_pixels)) as image:
        image.draft("RGB", (1, 1))
        image.load()


def resize_for_model(image: Image.Image, size: int) -> np.ndarray:
    """Square bicubic resize to ``size`` → uint8 array [size, size, 3]."""
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def to_pixel_values(
    images: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Stack uint8 HWC arrays into a normalised float32 batch [B, 3, H, W]."""
    # Imported here: readers that only decode (the Ray shard reader's workers) start without loading torch.
    import torch

    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return batch.sub_(mean_t).div_(std_t)
