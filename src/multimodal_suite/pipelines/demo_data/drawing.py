"""Drawing primitives shared by the sample collections: figures, balloons, text blocks, panel grids, JPEG bytes.

Every primitive that varies takes a ``random.Random`` and a box and draws nothing else at random, so a collection
that seeds its generator per item gets the same pixels for the same seed.
"""
from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive corners, as PIL draws them)

BALLOON_FILL: RGB = (250, 250, 250)


def tint(color: RGB, toward: RGB, amount: float) -> RGB:
    """``color`` moved ``amount`` (0–1) of the way to ``toward``."""
    return tuple(int(c + (t - c) * amount) for c, t in zip(color, toward))  # type: ignore[return-value]


def as_xywh(box: Box) -> list[int]:
    """``box`` as ``[x, y, width, height]``, the bbox form of panel sidecars."""
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def draw_text_lines(
    draw: ImageDraw.ImageDraw, rng: random.Random, box: Box, ink: RGB, pitch: int = 4, thickness: int = 1
) -> None:
    """Dense lines standing for printed text: ragged right edge, an occasional short paragraph end."""
    x0, y0, x1, y1 = box
    y = y0
    while y + thickness <= y1:
        end = x1 if rng.random() > 0.12 else x0 + int((x1 - x0) * rng.uniform(0.3, 0.8))
        draw.rectangle((x0, y, max(x0, end - rng.randint(0, 4)), y + thickness - 1), fill=ink)
        y += pitch


def draw_block_letters(draw: ImageDraw.ImageDraw, rng: random.Random, box: Box, fill: RGB, outline: RGB) -> None:
    """A title in big block letters: a row of filled, outlined boxes of varying width."""
    x0, y0, x1, y1 = box
    x = x0
    while x < x1 - 4:
        width = rng.randint(6, 14)
        top = y0 + rng.randint(0, max(0, (y1 - y0) // 5))
        draw.rectangle((x, top, min(x + width, x1), y1), fill=fill, outline=outline)
        x += width + rng.randint(1, 3)


def draw_figure(draw: ImageDraw.ImageDraw, rng: random.Random, box: Box, palette: tuple[RGB, ...], ink: RGB) -> None:
    """A stylised character standing in ``box``: head, torso, arms and legs in palette colours.

    The arms reach about one head beyond the torso on each side, so they may leave a narrow ``box``.
    """
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w < 6 or h < 10:
        return
    cx = x0 + w // 2 + rng.randint(-w // 6, w // 6)
    head = max(3, int(min(w, h) * rng.uniform(0.12, 0.2)))
    top = y0 + rng.randint(0, max(1, h // 6))
    draw.ellipse((cx - head, top, cx + head, top + 2 * head), fill=rng.choice(palette), outline=ink)
    torso_w = int(head * rng.uniform(1.2, 2.0))
    torso = (cx - torso_w, top + 2 * head, cx + torso_w, top + 2 * head + int(h * 0.35))
    draw.rectangle(torso, fill=rng.choice(palette), outline=ink)
    for side in (-1, 1):
        hand = (cx + side * (torso_w + head * 2), torso[1] + rng.randint(-head, 3 * head))
        draw.line((cx + side * torso_w, torso[1] + 2, *hand), fill=ink, width=2)
        foot = (cx + side * torso_w, min(y1, torso[3] + int(h * 0.3)))
        draw.line((cx + side * torso_w // 2, torso[3], *foot), fill=ink, width=2)


def draw_speech_bubble(draw: ImageDraw.ImageDraw, rng: random.Random, box: Box, ink: RGB) -> None:
    """A speech balloon with a few text lines, in the upper part of ``box``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    bw, bh = int(w * rng.uniform(0.35, 0.6)), int(h * rng.uniform(0.2, 0.35))
    bx, by = x0 + rng.randint(2, max(2, w - bw - 2)), y0 + rng.randint(2, max(2, h // 4))
    draw.ellipse((bx, by, bx + bw, by + bh), fill=BALLOON_FILL, outline=ink)
    draw_text_lines(draw, rng, (bx + bw // 5, by + bh // 3, bx + 4 * bw // 5, by + 2 * bh // 3), ink, pitch=3)


def grid_boxes(rng: random.Random, box: Box, rows: int, gutter: int) -> list[Box]:
    """Panel boxes of a page grid: ``rows`` rows of 1–3 panels with uneven heights and widths, ``gutter`` apart."""
    x0, y0, x1, y1 = box
    weights = [rng.uniform(0.75, 1.3) for _ in range(rows)]
    height = (y1 - y0) - gutter * (rows - 1)
    boxes, y = [], y0
    for weight in weights:
        row_h = int(height * weight / sum(weights))
        cols = rng.choice([1, 2, 2, 2, 3, 3])
        col_weights = [rng.uniform(0.7, 1.4) for _ in range(cols)]
        width = (x1 - x0) - gutter * (cols - 1)
        x = x0
        for col_weight in col_weights:
            col_w = int(width * col_weight / sum(col_weights))
            boxes.append((x, y, x + col_w, y + row_h))
            x += col_w + gutter
        y += row_h + gutter
    return boxes


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes of ``image``; fixed encoder settings, so equal images give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()
