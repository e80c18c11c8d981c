"""Pictures of a tagged folder: the contact sheet of its crops (each captioned with its image and its tags) and
the per-tag F1 of each tagging method against the folder's true tags."""
from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
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


METHOD_COLOURS = ("#9e9e9e", "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")


def per_tag_f1_figure(per_tag: pd.DataFrame, methods: Sequence[str], title: str) -> Figure:
    """Horizontal grouped bars: the F1 of each method on each tag, most frequent true tag on top, each tag labelled
    with its support (images that carry it).

    Args:
        per_tag: rows with ``method``, ``tag``, ``support``, ``f1`` (as ``tagging_evaluate`` writes them).
        methods: the methods to draw, in legend order (at most ``len(METHOD_COLOURS)``).
        title: axes title.

    Returns:
        A figure drawn without pyplot (no interactive backend, nothing to close); a note when there is no tag.
    """
    rows = per_tag[per_tag["method"].isin(methods)]
    support = rows.groupby("tag")["support"].max()
    tags = sorted(support.index, key=lambda tag: (-support[tag], tag))
    fig = Figure(figsize=(7.5, 0.12 * len(methods) * max(len(tags), 1) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    if not tags:
        ax.text(0.5, 0.5, "no tags", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    f1 = rows.pivot_table(index="tag", columns="method", values="f1", aggfunc="max").reindex(tags)
    height = 0.8 / len(methods)
    positions = np.arange(len(tags))
    for number, (method, colour) in enumerate(zip(methods, METHOD_COLOURS)):
        values = f1[method].fillna(0.0).to_numpy() if method in f1 else np.zeros(len(tags))
        ax.barh(positions - 0.4 + (number + 0.5) * height, values, height=height, color=colour, label=method)
    ax.set_yticks(positions, [f"{tag} ({int(support[tag])})" for tag in tags])
    ax.set_ylim(len(tags) - 0.5, -0.5)  # most frequent tag on top, no empty rows
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (true images of the tag in brackets)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig
