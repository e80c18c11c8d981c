"""Image decoding: reduced-scale JPEG decoding keeps at least the size the model needs."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from multimodal_suite.common.images import ImageDecodeError, decode_image, resize_for_model


def jpeg(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_jpeg_is_decoded_at_the_smallest_scale_that_still_covers_min_size():
    data = jpeg(800, 1200)
    assert decode_image(data).size == (800, 1200)
    assert decode_image(data, min_size=384).size == (400, 600)  # 1/2: 1/4 would give 200 < 384
    assert decode_image(data, min_size=64).size == (100, 150)  # 1/8, the smallest libjpeg scale
    assert decode_image(data, min_size=1000).size == (800, 1200)  # never upscaled, never below min_size


def test_reduced_decoding_changes_the_model_input_little():
    data = jpeg(800, 1200)
    full = resize_for_model(decode_image(data), 64).astype(int)
    reduced = resize_for_model(decode_image(data, min_size=64), 64).astype(int)
    assert full.shape == reduced.shape == (64, 64, 3)
    assert np.abs(full - reduced).mean() < 12  # noise image: the worst case for a smaller DCT


def test_png_ignores_min_size_and_bad_bytes_name_the_problem():
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), "red").save(buffer, format="PNG")
    assert decode_image(buffer.getvalue(), min_size=8).size == (30, 20)
    with pytest.raises(ImageDecodeError, match="0 bytes"):
        decode_image(b"", min_size=8)
    with pytest.raises(ImageDecodeError):
        decode_image(jpeg(64, 64)[:100], min_size=8)
