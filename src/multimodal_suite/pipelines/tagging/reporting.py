"""The contact sheet of a tagged folder: its crops in a grid, each captioned with its image and its tags."""
from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

COLUMNS = 6
TAG_LINES = 3


def contact_sheet(
    crop_pngs: Sequence[bytes],
    captions: Sequence[str],
    crop_tags: Sequence[Mapping[str, float]],
    *,
    thumb_size: int = 96,
    max_crops: int = 48,
) -> Image.Image:
    """A grid of up to ``max_crops`` crops, each with its caption and its best ``TAG_LINES`` tags and scores.

    Args:
        crop_pngs: encoded crop images.
        captions: one line per crop (``"<image> #<crop id>"``).
        crop_tags: ``{tag: score}`` per crop, best first.
        thumb_size: thumbnails fit in a square of this many pixels.
        max_crops: most crops shown.

    Returns:
        An RGB image; a small one saying so when there are no crops.
    """
    font = ImageFont.load_default(size=11)
    count = min(len(crop_pngs), max_crops)
    if count == 0:
        canvas = Image.new("RGB", (240, 40), "white")
        ImageDraw.Draw(canvas).text((8, 12), "no crops to show", fill="black", font=font)
        return canvas
    pad, line = 6, 13
    cell_w, cell_h = max(thumb_size, 120), thumb_size + (1 + TAG_LINES) * line + 4
    columns = min(COLUMNS, count)
    rows = math.ceil(count / columns)
    canvas = Image.new("RGB", (pad + columns * (cell_w + pad), pad + rows * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for position in range(count):
        left = pad + (position % columns) * (cell_w + pad)
        top = pad + (position // columns) * (cell_h + pad)
        with Image.open(io.BytesIO(crop_pngs[position])) as crop:
            thumb = crop.convert("RGB")
        thumb.thumbnail((thumb_size, thumb_size))
        canvas.paste(thumb, (left + (cell_w - thumb.width) // 2, top + (thumb_size - thumb.height) // 2))
        text_top = top + thumb_size + 2
        draw.text((left, text_top), captions[position][:22], fill="#333333", font=font)
        tags = list(crop_tags[position].items())[:TAG_LINES]
        for number, (tag, score) in enumerate(tags, start=1):
            draw.text((left, text_top + number * line), f"{tag} {score:.2f}", fill="#1f5fa8", font=font)
        if not tags:
            draw.text((left, text_top + line), "(no tag)", fill="#999999", font=font)
    return canvas
