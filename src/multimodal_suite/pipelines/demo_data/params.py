"""Parameter sections of the demo_data pipeline, one frozen dataclass each (defaults = ``conf/base``).

Nodes build them with :func:`multimodal_suite.common.params.from_params`; the checks that span several keys run
in ``__post_init__``, so a config made in code is held to the same rules as one read from YAML.
"""
from __future__ import annotations

from dataclasses import dataclass

# Object placement in the tagging images (see tagging_collections.plan_image); image_size is checked against it.
CELL_MARGIN = 6  # pixels between an object and its cell's edge: adjacent objects are >= 12 px apart
MIN_OBJECT_SIZE = 24


@dataclass(frozen=True)
class DemoBooksConfig:
    """Parameters of the sample book collection (``params:demo_data``).

    Args:
        seed: Everything generated is a function of this seed.
        num_books: Books written to disk, the long one included.
        min_pages: Shortest regular book (at least 11).
        max_pages: Longest regular book.
        long_book_pages: Length of one extra-long book (an omnibus); 0 for none.
        unpadded_books: Regular books whose pages are named ``0.jpg … N.jpg`` instead of ``000.jpg …``.
        page_size: ``(width, height)`` of a page image in pixels.
        jpeg_quality: JPEG quality of the page images.
        bad_inputs: Add the broken inputs real collections have (see
            :func:`~multimodal_suite.pipelines.demo_data.comic_books.plan_books`).
    """

    seed: int = 42
    num_books: int = 18
    min_pages: int = 12
    max_pages: int = 80
    long_book_pages: int = 600
    unpadded_books: int = 2
    page_size: tuple[int, int] = (200, 300)
    jpeg_quality: int = 70
    bad_inputs: bool = True

    def __post_init__(self) -> None:
        if not 11 <= self.min_pages <= self.max_pages:
            # below 11 pages unpadded names sort the same as numbers, and the ordering check would test nothing
            raise ValueError(f"need 11 <= min_pages <= max_pages, got {self.min_pages}, {self.max_pages}")


@dataclass(frozen=True)
class DemoTaggingConfig:
    """Parameters of the sample tagging collections (``params:demo_data_tagging``).

    Args:
        seed: Everything generated is a function of this seed.
        image_size: ``(width, height)`` of every image in pixels.
        num_shards: Source tar shards.
        samples_per_shard: Samples written into each shard.
        min_objects: Fewest objects in an image.
        max_objects: Most objects in an image (at most 9: one per cell of a 2×2 or 3×3 grid).
        photo_share: Chance that an object is a photo crop rather than a drawn shape.
        figure_share: Chance that an object is a cartoon figure.
        tag_skew: How uneven the fine-grained tags are: the n-th shape, colour and photo of the vocabulary is
            drawn with weight ``1 / n ** tag_skew`` (0: evenly).
        textured_background_share: Chance that an image's background is lightly textured rather than plain.
        target_folders: Names of the target folders.
        images_per_folder: Images in each target folder.
        jpeg_quality: JPEG quality of every image.
        bad_inputs: Add the broken inputs real collections have (see
            :func:`~multimodal_suite.pipelines.demo_data.tagging_collections.bad_input_keys`).
    """

    seed: int = 42
    image_size: tuple[int, int] = (160, 160)
    num_shards: int = 4
    samples_per_shard: int = 60
    min_objects: int = 2
    max_objects: int = 4
    photo_share: float = 0.3
    figure_share: float = 0.08
    tag_skew: float = 1.0
    textured_background_share: float = 0.5
    target_folders: tuple[str, ...] = ("00290", "00291")
    images_per_folder: int = 24
    jpeg_quality: int = 85
    bad_inputs: bool = True

    def __post_init__(self) -> None:
        problem = _tagging_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def grid(self) -> int:
        """Cells per side of the placement grid."""
        return 2 if self.max_objects <= 4 else 3


def _tagging_problem(config: DemoTaggingConfig) -> str | None:
    """What makes ``config`` unusable, or ``None``."""
    if len(config.image_size) != 2:
        return f"image_size must be [width, height], got {list(config.image_size)}"
    if not 1 <= config.min_objects <= config.max_objects <= 9:
        return f"need 1 <= min_objects <= max_objects <= 9, got {config.min_objects}, {config.max_objects}"
    if min(config.image_size) // config.grid - 2 * CELL_MARGIN < MIN_OBJECT_SIZE:
        side = config.grid * (MIN_OBJECT_SIZE + 2 * CELL_MARGIN)
        return (f"image_size {list(config.image_size)} is too small for {config.max_objects} objects; "
                f"need both sides >= {side}")
    if config.num_shards < 1 or config.samples_per_shard < 1 or config.images_per_folder < 1:
        return "num_shards, samples_per_shard and images_per_folder must be >= 1"
    if config.bad_inputs and (config.num_shards < 2 or config.samples_per_shard < 16):
        return "bad_inputs needs num_shards >= 2 and samples_per_shard >= 16 (or set bad_inputs: false)"
    for name in ("photo_share", "figure_share", "textured_background_share"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            return f"{name} must be within [0, 1], got {getattr(config, name)}"
    if config.photo_share + config.figure_share > 1.0:
        return "photo_share + figure_share must be <= 1"
    if config.tag_skew < 0:
        return f"tag_skew must be >= 0, got {config.tag_skew}"
    if not 1 <= config.jpeg_quality <= 100:
        return f"jpeg_quality must be within [1, 100], got {config.jpeg_quality}"
    folders = config.target_folders
    if not folders or len(set(folders)) != len(folders) or any(
        not name or name.startswith(".") or "/" in name or "\\" in name for name in folders
    ):
        return f"target_folders must be distinct plain folder names, got {list(folders)}"
    return None


PARAMETER_SECTIONS: dict[str, type] = {"demo_data": DemoBooksConfig, "demo_data_tagging": DemoTaggingConfig}
