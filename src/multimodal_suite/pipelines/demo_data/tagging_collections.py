"""Sample data for the auto-tagging pipelines: images composed of objects whose tags are known.

Each image is a plain or lightly textured background with 2–4 objects, one per cell of a grid, so there is
always background between two objects and a classical segmenter can separate them. An object is

* a drawn shape in a colour, solid or textured: a red circle is ``["circle", "drawing", "red"]``, a striped
  blue square ``["blue", "drawing", "square", "striped"]``;
* a crop of an image bundled with scikit-image (astronaut, coffee, chelsea the cat, rocket) or scikit-learn
  (china, flower): the cat is ``["animal", "cat", "photo"]``;
* a cartoon figure drawn by :func:`~multimodal_suite.pipelines.demo_data.drawing.draw_figure`:
  ``["cartoon", "drawing", "figure"]``.

``drawing`` and ``photo`` are coarse tags that nearly every image carries one of; the fine-grained ones are of
uneven frequency, as in real collections: the n-th shape, colour and photo of the vocabulary is drawn with
weight ``1 / n ** tag_skew``, so a few tags are common and the rest rare (see :func:`vocabulary_weights`).

An image's tags are the union of its objects' tags, as an image-level VLM would give them. The source
collection is webdataset shards with those tags in a separate folder; the target collection is folders of plain
images drawn from the same vocabulary but in other compositions, with the true tags kept apart to measure tag
precision and recall. Everything is a function of the seed: the same parameters give the same bytes.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import random
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from .broken_inputs import html_page_as_image, tar_cut_mid_member, truncated_jpeg
from .drawing import RGB, Box, draw_figure, encode_jpeg
from .params import CELL_MARGIN, MIN_OBJECT_SIZE, DemoTaggingConfig

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# The object vocabulary.

COLORS: dict[str, RGB] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 195, 25),
    "purple": (135, 55, 175),
    "orange": (240, 125, 25),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "cross")
# "solid" is no tag: a VLM names a pattern when there is one, not its absence.
TEXTURES = ("solid", "striped", "dotted", "checkered")
TEXTURE_WEIGHTS = (4, 2, 1, 1)


@dataclass(frozen=True)
class PhotoSource:
    """An image bundled with a library: where it comes from, the subject's box in it, and the subject's tags."""

    name: str
    load: Callable[[], np.ndarray]
    box: Box  # x0, y0, x1, y1 of a square around the subject (exclusive corner, as PIL crops)
    tags: tuple[str, ...]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _sklearn(file_name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        # The JPEGs ship inside the installed package; reading them directly avoids importing scikit-learn
        # (seconds), with its public loader as the fallback.
        spec = importlib.util.find_spec("sklearn")
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "images" / file_name
            if path.is_file():
                with Image.open(path) as image:
                    return np.asarray(image.convert("RGB"))
        from sklearn.datasets import load_sample_image

        return load_sample_image(file_name)

    return load


PHOTOS: tuple[PhotoSource, ...] = (
    PhotoSource("astronaut", _skimage("astronaut"), (60, 0, 380, 320), ("astronaut", "person")),
    PhotoSource("coffee", _skimage("coffee"), (90, 0, 470, 380), ("coffee", "cup")),
    PhotoSource("cat", _skimage("chelsea"), (80, 0, 380, 300), ("animal", "cat")),
    PhotoSource("rocket", _skimage("rocket"), (180, 127, 460, 407), ("rocket", "space")),
    PhotoSource("china", _sklearn("china.jpg"), (60, 40, 400, 380), ("building", "pagoda")),
    PhotoSource("flower", _sklearn("flower.jpg"), (160, 75, 460, 375), ("flower", "plant")),
)
FIGURE_TAGS = ("cartoon", "figure")
DRAWING_TAG = "drawing"  # coarse tags: what kind of object it is
PHOTO_TAG = "photo"
PHOTO_TILE = 128  # subject crops are kept at this size; objects are at most ~70 px
FIGURE_PALETTE: tuple[RGB, ...] = tuple(COLORS.values())
FIGURE_INK: RGB = (30, 30, 30)
BACKGROUNDS: tuple[RGB, ...] = ((236, 236, 232), (226, 231, 238), (240, 234, 222), (228, 236, 228))


@dataclass(frozen=True)
class TagObject:
    """One object: what it is and the tags a VLM gives it.

    Attributes:
        kind: ``"shape"``, ``"photo"`` or ``"figure"``.
        name: The shape (``circle`` …), the photo (``cat`` …) or ``figure``.
        color: Colour name of a shape; ``None`` otherwise.
        texture: ``solid``, ``striped``, ``dotted`` or ``checkered`` for a shape; ``None`` otherwise.
        tags: Sorted tags.
    """

    kind: str
    name: str
    color: str | None = None
    texture: str | None = None

    @property
    def tags(self) -> tuple[str, ...]:
        if self.kind == "shape":
            tags = {self.name, str(self.color), DRAWING_TAG}
            if self.texture and self.texture != "solid":
                tags.add(self.texture)
        elif self.kind == "photo":
            tags = {*next(photo.tags for photo in PHOTOS if photo.name == self.name), PHOTO_TAG}
        else:
            tags = {*FIGURE_TAGS, DRAWING_TAG}
        return tuple(sorted(tags))


@dataclass(frozen=True)
class PlacedObject:
    """An object and its box in the image (x0, y0, x1, y1, exclusive corner) plus its own drawing seed."""

    obj: TagObject
    box: Box
    seed: int


@dataclass(frozen=True)
class ImagePlan:
    """What one image shows: background and objects. ``tags`` is the image's ground truth."""

    size: tuple[int, int]
    background: RGB
    textured: bool
    objects: tuple[PlacedObject, ...]
    seed: int

    @property
    def tags(self) -> list[str]:
        """The union of the objects' tags, sorted (empty for a blank image)."""
        return sorted({tag for placed in self.objects for tag in placed.obj.tags})


def vocabulary_weights(count: int, skew: float) -> list[float]:
    """Drawing weights of ``count`` choices in vocabulary order: ``1 / n ** skew`` for the n-th (Zipf's law;
    ``skew`` 0 draws them evenly)."""
    return [1.0 / (rank ** skew) for rank in range(1, count + 1)]


def sample_object(rng: random.Random, config: DemoTaggingConfig) -> TagObject:
    """A random object of the vocabulary; shapes, colours and photos drawn with :func:`vocabulary_weights`."""
    draw = rng.random()
    if draw < config.photo_share:
        return TagObject("photo", rng.choices(PHOTOS, vocabulary_weights(len(PHOTOS), config.tag_skew))[0].name)
    if draw < config.photo_share + config.figure_share:
        return TagObject("figure", "figure")
    texture = rng.choices(TEXTURES, TEXTURE_WEIGHTS)[0]
    shape = rng.choices(SHAPES, vocabulary_weights(len(SHAPES), config.tag_skew))[0]
    color = rng.choices(list(COLORS), vocabulary_weights(len(COLORS), config.tag_skew))[0]
    return TagObject("shape", shape, color, texture)


def plan_image(rng: random.Random, config: DemoTaggingConfig, num_objects: int | None = None) -> ImagePlan:
    """Background and objects of one image; each object in its own grid cell, clear of the cell's edges."""
    if num_objects is None:
        num_objects = rng.randint(config.min_objects, config.max_objects)
    width, height = config.image_size
    grid = config.grid
    cell_w, cell_h = width // grid, height // grid
    largest = min(cell_w, cell_h) - 2 * CELL_MARGIN
    smallest = max(MIN_OBJECT_SIZE, int(0.5 * largest))
    objects = []
    for cell in sorted(rng.sample(range(grid * grid), num_objects)):
        side = rng.randint(smallest, largest)
        x0 = (cell % grid) * cell_w + rng.randint(CELL_MARGIN, cell_w - side - CELL_MARGIN)
        y0 = (cell // grid) * cell_h + rng.randint(CELL_MARGIN, cell_h - side - CELL_MARGIN)
        objects.append(PlacedObject(sample_object(rng, config), (x0, y0, x0 + side, y0 + side), rng.randrange(2**32)))
    textured = rng.random() < config.textured_background_share
    return ImagePlan((width, height), rng.choice(BACKGROUNDS), textured, tuple(objects), rng.randrange(2**32))


def plan_source_image(config: DemoTaggingConfig, shard: int, index: int) -> ImagePlan:
    """The plan of source sample ``index`` of shard ``shard`` (its own random stream)."""
    return plan_image(random.Random(f"{config.seed}:source:{shard}:{index}"), config)


def plan_target_image(config: DemoTaggingConfig, folder: str, index: int) -> ImagePlan:
    """The plan of target image ``index`` of ``folder``: a stream of its own, apart from every source image."""
    rng = random.Random(f"{config.seed}:target:{folder}:{index}")
    blank = f"{folder}/{target_image_name(folder, index)}" == bad_input_keys(config).get("blank_target")
    return plan_image(rng, config, num_objects=0 if blank else None)


# ---------------------------------------------------------------------------------------------------------------
# Drawing.


def load_photo_tiles() -> dict[str, Image.Image]:
    """Each bundled photo's subject, cropped square and resized to ``PHOTO_TILE`` pixels."""
    tiles = {}
    for photo in PHOTOS:
        image = Image.fromarray(np.asarray(photo.load())[..., :3]).convert("RGB")
        tiles[photo.name] = image.crop(photo.box).resize((PHOTO_TILE, PHOTO_TILE), Image.Resampling.LANCZOS)
    return tiles


def _regular_polygon(side: int, corners: int, inner: float | None = None) -> list[tuple[float, float]]:
    """Corner points of a regular polygon (or a star with ``inner`` radius ratio), pointing up, in a square."""
    centre, radius = side / 2, side / 2 - 1
    points = []
    steps = corners * (2 if inner else 1)
    for step in range(steps):
        angle = -np.pi / 2 + 2 * np.pi * step / steps
        r = radius * (inner if inner and step % 2 else 1.0)
        points.append((centre + r * np.cos(angle), centre + r * np.sin(angle)))
    return points


def shape_mask(shape: str, side: int) -> Image.Image:
    """An ``L`` mask (255 inside) of ``shape`` filling a ``side`` × ``side`` square."""
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse((1, 1, side - 2, side - 2), fill=255)
    elif shape == "square":
        draw.rectangle((2, 2, side - 3, side - 3), fill=255)
    elif shape == "triangle":
        draw.polygon([(side / 2, 1), (side - 2, side - 3), (1, side - 3)], fill=255)
    elif shape == "star":
        draw.polygon(_regular_polygon(side, 5, inner=0.5), fill=255)
    elif shape == "hexagon":
        draw.polygon(_regular_polygon(side, 6), fill=255)
    elif shape == "diamond":
        draw.polygon(_regular_polygon(side, 4), fill=255)
    elif shape == "cross":  # a plus sign whose arms are a third of the side wide
        a, b = side / 3, 2 * side / 3
        draw.rectangle((a, 1, b, side - 2), fill=255)
        draw.rectangle((1, a, side - 2, b), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return mask


def texture_tile(texture: str, color: RGB, side: int) -> Image.Image:
    """A ``side`` × ``side`` fill of ``color``; patterns use a darker shade, so the colour still reads as one."""
    tile = Image.new("RGB", (side, side), color)
    if texture == "solid":
        return tile
    shade: RGB = (color[0] // 2, color[1] // 2, color[2] // 2)
    draw = ImageDraw.Draw(tile)
    if texture == "striped":
        for offset in range(-side, side, 8):
            draw.line((offset, side, offset + side, 0), fill=shade, width=3)
    elif texture == "dotted":
        for y in range(3, side, 9):
            for x in range(3 + (y // 9 % 2) * 4, side, 9):
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=shade)
    elif texture == "checkered":
        for y in range(0, side, 8):
            for x in range(0, side, 8):
                if (x // 8 + y // 8) % 2:
                    draw.rectangle((x, y, x + 7, y + 7), fill=shade)
    else:
        raise ValueError(f"unknown texture {texture!r}; known: {TEXTURES}")
    return tile


def _photo_object(tile: Image.Image, rng: random.Random, side: int) -> Image.Image:
    """The subject with a little jitter (crop, mirror, exposure), so no two copies are identical."""
    crop = rng.randint(int(0.85 * PHOTO_TILE), PHOTO_TILE)
    x0, y0 = rng.randint(0, PHOTO_TILE - crop), rng.randint(0, PHOTO_TILE - crop)
    image = tile.crop((x0, y0, x0 + crop, y0 + crop)).resize((side, side), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    gain = rng.uniform(0.9, 1.1)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * gain, 0, 255).astype(np.uint8))


def _background(plan: ImagePlan) -> Image.Image:
    width, height = plan.size
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[:] = plan.background
    if plan.textured:  # faint grain and a gentle light falloff, as on a photographed table or wall
        generator = np.random.default_rng(plan.seed)
        pixels += generator.integers(-6, 7, size=(height, width, 1))
        ramp = np.linspace(-8, 8, width, dtype=np.float32)[None, :, None] * generator.choice([-1.0, 1.0])
        pixels += ramp
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render_image(plan: ImagePlan, photo_tiles: dict[str, Image.Image]) -> Image.Image:
    """Draw ``plan``: the background, then each object inside its box."""
    image = _background(plan)
    for placed in plan.objects:
        x0, y0, x1, _ = placed.box
        side = x1 - x0
        rng = random.Random(placed.seed)
        obj = placed.obj
        if obj.kind == "shape":
            tile = texture_tile(str(obj.texture), COLORS[str(obj.color)], side)
            image.paste(tile, (x0, y0), shape_mask(obj.name, side))
        elif obj.kind == "photo":
            image.paste(_photo_object(photo_tiles[obj.name], rng, side), (x0, y0))
        else:  # drawn on its own layer, so limbs never reach beyond the box
            layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
            inner = (side // 4, 1, side - side // 4 - 1, side - 2)  # arms reach about half the inner width out
            draw_figure(ImageDraw.Draw(layer), rng, inner, FIGURE_PALETTE, FIGURE_INK)
            image.paste(layer, (x0, y0), layer)
    return image


# ---------------------------------------------------------------------------------------------------------------
# Containers.

TAR_MTIME = 1_700_000_000  # fixed, so the same samples give the same tar bytes


def write_tar(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of ``(name, bytes)`` members in the given order, with fixed owners and times."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_parquet(rows: list[dict[str, Any]]) -> bytes:
    """A parquet file of ``rows`` (the metadata layout of img2dataset shards)."""
    schema = pa.schema([
        ("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()),
        ("original_height", pa.int32()), ("sha256", pa.string()),
    ])
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    return buffer.getvalue()


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def sample_key(shard: int, index: int) -> str:
    """Keys as img2dataset writes them: 5-digit shard number then 4-digit sample number."""
    return f"{shard:05d}{index:04d}"


def target_image_name(folder: str, index: int) -> str:
    return f"{folder}_{index:03d}.jpg"


# Where the broken inputs go: (shard, sample index); see bad_input_keys.
MISSING_TAGS_AT = (0, 7)
TRUNCATED_JPEG_AT = (1, 5)
NOT_AN_IMAGE_SAMPLE = 11
BLANK_TARGET_INDEX = 3


def bad_input_keys(config: DemoTaggingConfig) -> dict[str, str]:
    """Where :func:`generate_collection` puts each broken input (empty without ``bad_inputs``).

    Returns:
        ``missing_tags``: key of the sample without a tag file (it stays in its tar and parquet);
        ``truncated_jpeg``: key whose JPEG is cut to a third (the tar member itself is intact);
        ``not_an_image``: key whose image bytes are an HTML error page;
        ``truncated_tar``: the shard file cut in the middle of ``truncated_at``'s image member, so the samples
        before it are readable and it and the later ones are lost (its parquet still lists them all);
        ``blank_target``: ``<folder>/<image>`` of the target image without objects (its truth is ``[]``).
    """
    if not config.bad_inputs:
        return {}
    last = config.num_shards - 1
    return {
        "missing_tags": sample_key(*MISSING_TAGS_AT),
        "truncated_jpeg": sample_key(*TRUNCATED_JPEG_AT),
        "not_an_image": sample_key(min(2, last), NOT_AN_IMAGE_SAMPLE),
        "truncated_tar": f"{shard_name(last)}.tar",
        "truncated_at": sample_key(last, _truncation_index(config)),
        "blank_target": _blank_target(config),
    }


def _truncation_index(config: DemoTaggingConfig) -> int:
    return max(NOT_AN_IMAGE_SAMPLE + 1, config.samples_per_shard * 3 // 5)


def _blank_target(config: DemoTaggingConfig) -> str:
    folder = config.target_folders[0]
    return f"{folder}/{target_image_name(folder, min(BLANK_TARGET_INDEX, config.images_per_folder - 1))}"


# ---------------------------------------------------------------------------------------------------------------
# The collections.


def _source_shard(
    config: DemoTaggingConfig, shard: int, tiles: dict[str, Image.Image], bad: dict[str, str]
) -> tuple[bytes, bytes, dict[str, bytes]]:
    """``(tar bytes, parquet bytes, {"<key>.json": tag file bytes})`` of one source shard."""
    width, height = config.image_size
    members: list[tuple[str, bytes]] = []
    rows: list[dict[str, Any]] = []
    tag_files: dict[str, bytes] = {}
    for index in range(config.samples_per_shard):
        key = sample_key(shard, index)
        plan = plan_source_image(config, shard, index)
        image_bytes = encode_jpeg(render_image(plan, tiles), config.jpeg_quality)
        if key == bad.get("truncated_jpeg"):
            image_bytes = truncated_jpeg(image_bytes)
        elif key == bad.get("not_an_image"):
            image_bytes = html_page_as_image()
        members.append((f"{key}.jpg", image_bytes))
        members.append((f"{key}.json", json.dumps({"key": key, "width": width, "height": height}).encode()))
        rows.append({
            "key": key, "status": "success", "error_message": None, "width": width, "height": height,
            "original_width": width, "original_height": height,
            "sha256": hashlib.sha256(image_bytes).hexdigest(),
        })
        if key != bad.get("missing_tags"):
            tag_files[f"{key}.json"] = json.dumps({"tags": plan.tags}).encode()
    tar_bytes = write_tar(members)
    if f"{shard_name(shard)}.tar" == bad.get("truncated_tar"):
        tar_bytes = tar_cut_mid_member(tar_bytes, f"{bad['truncated_at']}.jpg")
    return tar_bytes, write_parquet(rows), tag_files


def generate_collection(
    config: DemoTaggingConfig,
) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes], dict[str, dict[str, list[str]]]]:
    """The source shards, their tag files, the target images and the targets' true tags of ``config``.

    Returns:
        ``({"shard-NNNNNN.tar" | "shard-NNNNNN.parquet": bytes}, {"<key>.json": tag file bytes},
        {"<folder>/<folder>_NNN.jpg": bytes}, {folder: {image file name: [tags]}})``.
    """
    started = time.perf_counter()
    tiles = load_photo_tiles()
    bad = bad_input_keys(config)

    source_files: dict[str, bytes] = {}
    tag_files: dict[str, bytes] = {}
    for shard in range(config.num_shards):
        tar_bytes, parquet_bytes, shard_tags = _source_shard(config, shard, tiles, bad)
        source_files[f"{shard_name(shard)}.tar"] = tar_bytes
        source_files[f"{shard_name(shard)}.parquet"] = parquet_bytes
        tag_files.update(shard_tags)

    target_files: dict[str, bytes] = {}
    truth: dict[str, dict[str, list[str]]] = {}
    for folder in config.target_folders:
        truth[folder] = {}
        for index in range(config.images_per_folder):
            name = target_image_name(folder, index)
            plan = plan_target_image(config, folder, index)
            target_files[f"{folder}/{name}"] = encode_jpeg(render_image(plan, tiles), config.jpeg_quality)
            truth[folder][name] = plan.tags

    elapsed_s = time.perf_counter() - started
    images = config.num_shards * config.samples_per_shard + len(target_files)
    logger.info(
        "generated %d source shards (%d samples, %d tag files) and %d target folders (%d images) in %.1f s "
        "(%.0f images/s); bad inputs: %s",
        config.num_shards, config.num_shards * config.samples_per_shard, len(tag_files), len(truth),
        len(target_files), elapsed_s, images / max(elapsed_s, 1e-9), bad or "none",
    )
    return source_files, tag_files, target_files, truth
