"""Decode → segment → crop → embed: an image that cannot be used (a decompression bomb's header included) is a
reason for that image only; the other images of the batch are segmented and embedded."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from multimodal_suite.common.images import ImageDecodeError
from multimodal_suite.pipelines.demo_data.broken_inputs import (
    decompression_bomb_jpeg,
    decompression_bomb_png,
)
from multimodal_suite.pipelines.tagging.crops import (
    CropEmbedder,
    decode_rgb,
    segment_images,
)
from multimodal_suite.pipelines.tagging.segmentation import (
    SegmenterConfig,
    build_segmenter,
)

SEGMENTER = {"backend": "classical", "min_area": 150, "max_masks": 9}
TINY_CLIP = {
    "source": "config", "family": "clip", "seed": 0,
    "config": {"projection_dim": 32,
               "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                                 "num_hidden_layers": 1, "num_attention_heads": 2},
               "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "vocab_size": 100, "bos_token_id": 0,
                               "eos_token_id": 2, "pad_token_id": 1}},
}


def picture(seed: int, format: str = "JPEG") -> bytes:
    """96 × 96, two filled shapes on white: the classical segmenter finds objects in it."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 40, 40), fill=tuple(int(v) for v in rng.integers(0, 160, 3)))
    draw.ellipse((52, 50, 88, 86), fill=tuple(int(v) for v in rng.integers(0, 160, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def segmenter():
    return build_segmenter(SegmenterConfig.from_dict(SEGMENTER))


def test_decode_rgb_refuses_a_bomb_and_honours_the_limit():
    assert decode_rgb(picture(1)).shape == (96, 96, 3)
    for bomb in (decompression_bomb_jpeg(), decompression_bomb_png()):
        with pytest.raises(ImageDecodeError, match="image too large"):
            decode_rgb(bomb)
    with pytest.raises(ImageDecodeError, match="over the limit of 9,215"):
        decode_rgb(picture(1), 96 * 96 - 1)


def test_segment_images_gives_reasons_for_the_bad_and_crops_for_the_rest(segmenter):
    images = [picture(1), decompression_bomb_jpeg(), picture(2, "PNG"), decompression_bomb_png(), b"<html>404</html>", picture(3)[:200]]
    results = segment_images(segmenter, images)
    assert [isinstance(result, str) for result in results] == [False, True, False, True, True, True]
    assert results[1].startswith("image too large") and results[3].startswith("image too large")
    assert results[4].startswith("not a recognised image format") and "truncated" in results[5].lower()
    assert all(len(results[i]) >= 2 for i in (0, 2))  # both shapes found
    strict = segment_images(segmenter, [picture(1)], max_pixels=96 * 96 - 1)
    assert isinstance(strict[0], str) and "over the limit" in strict[0]
    with pytest.raises(ValueError, match="max_image_pixels"):
        segment_images(segmenter, [picture(1)], max_pixels=0)


def test_crop_embedder_skips_a_bomb_and_embeds_the_rest():
    embedder = CropEmbedder(SEGMENTER, TINY_CLIP, batch_clips=4, device="cpu", mixed_precision=False)
    results = embedder.process([picture(1), decompression_bomb_jpeg(), picture(2)])
    assert isinstance(results[1], str) and results[1].startswith("image too large")
    for result in (results[0], results[2]):
        assert len(result) >= 2 and all(np.linalg.norm(vector) > 0 for _, vector in result)
    strict = CropEmbedder(SEGMENTER, TINY_CLIP, device="cpu", mixed_precision=False, max_image_pixels=96 * 96 - 1)
    assert all(isinstance(result, str) for result in strict.process([picture(1), picture(2)]))
