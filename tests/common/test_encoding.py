"""The batched image encoder: an image that cannot be used (a decompression bomb's header included) is a failure
row with its reason; every other image of the batch is embedded."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from multimodal_suite.common.encoding import encode_images, prepare_image
from multimodal_suite.common.models import load_model
from multimodal_suite.pipelines.demo_data.broken_inputs import (
    decompression_bomb_jpeg,
)

TINY_IMAGE_MODEL = {
    "source": "config", "family": "siglip_vision", "seed": 0,
    "config": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 1, "num_attention_heads": 2},
}


def jpeg(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def loaded():
    return load_model(TINY_IMAGE_MODEL)


def test_prepare_image_gives_a_reason_for_a_bomb_and_an_unreadable_file():
    assert prepare_image(lambda: decompression_bomb_jpeg(), 32).startswith("image too large")

    def vanished() -> bytes:
        raise FileNotFoundError("page 3 is gone")

    assert prepare_image(vanished, 32) == "unreadable: page 3 is gone"
    assert prepare_image(lambda: jpeg(1), 32).shape == (32, 32, 3)
    assert prepare_image(lambda: jpeg(1), 32, max_pixels=48 * 40 - 1).startswith("image too large: 48 × 40")


def test_a_bomb_among_good_images_is_one_failure_row(loaded):
    images = [jpeg(0), decompression_bomb_jpeg(), jpeg(1), jpeg(2), b"", jpeg(3)]
    result = encode_images(loaded, [lambda data=data: data for data in images], batch_size=2, device="cpu",
                           mixed_precision=False, num_workers=2, progress=None)
    assert set(result.failures) == {1, 4}
    assert "image too large" in result.failures[1] and "0 bytes" in result.failures[4]
    assert not result.embeddings[[1, 4]].any()
    assert np.all(np.linalg.norm(result.embeddings[[0, 2, 3, 5]], axis=1) > 0)


def test_the_pixel_limit_reaches_the_decode(loaded):
    loaders = [lambda seed=seed: jpeg(seed) for seed in range(3)]
    result = encode_images(loaded, loaders, device="cpu", mixed_precision=False, progress=None,
                           max_image_pixels=48 * 40 - 1)
    assert set(result.failures) == {0, 1, 2}
    assert all("over the limit of 1,919" in reason for reason in result.failures.values())
    with pytest.raises(ValueError, match="max_image_pixels"):
        encode_images(loaded, loaders, device="cpu", progress=None, max_image_pixels=0)
