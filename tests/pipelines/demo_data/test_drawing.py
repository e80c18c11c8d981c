"""demo_data drawing primitives: deterministic for a seed, and drawn where they are asked to be."""
from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw

from multimodal_suite.pipelines.demo_data.drawing import as_xywh, draw_figure, encode_jpeg, grid_boxes, tint

PALETTE = ((200, 40, 40), (40, 200, 40), (40, 40, 200))
INK = (20, 20, 20)


def _figure(seed: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = Image.new("RGB", (80, 120), (255, 255, 255))
    draw_figure(ImageDraw.Draw(image), random.Random(seed), box, PALETTE, INK)
    return np.asarray(image)


def test_figure_is_a_function_of_the_seed() -> None:
    box = (10, 10, 70, 110)
    assert np.array_equal(_figure(1, box), _figure(1, box))
    assert not np.array_equal(_figure(1, box), _figure(2, box))
    drawn_rows = np.flatnonzero((_figure(1, box) != 255).any(axis=(1, 2)))
    assert drawn_rows.min() >= box[1] and drawn_rows.max() <= box[3] + 1  # lines are 2 px wide


def test_figure_in_a_too_small_box_draws_nothing() -> None:
    assert (_figure(1, (10, 10, 14, 60)) == 255).all()


def test_grid_boxes_fill_the_box_with_gutters_between_panels() -> None:
    box, gutter = (8, 8, 192, 292), 4
    boxes = grid_boxes(random.Random(3), box, rows=4, gutter=gutter)
    assert len(boxes) >= 4
    assert all(box[0] <= b[0] < b[2] <= box[2] and box[1] <= b[1] < b[3] <= box[3] for b in boxes)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]) >= gutter


def test_small_helpers() -> None:
    assert tint((0, 100, 200), (100, 100, 100), 0.5) == (50, 100, 150)
    assert as_xywh((10, 20, 40, 80)) == [10, 20, 30, 60]


def test_equal_images_give_equal_jpeg_bytes() -> None:
    image = Image.effect_noise((64, 48), 40).convert("RGB")
    data = encode_jpeg(image, quality=70)
    assert data == encode_jpeg(image.copy(), quality=70) != encode_jpeg(image, quality=90)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (64, 48)
