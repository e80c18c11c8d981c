"""Typed parameters of the tagging pipelines: one frozen dataclass per section of
``conf/base/parameters_tagging.yml``.

Nodes build them at their boundary with :func:`~multimodal_suite.common.params.from_params`; the defaults are the
values of ``conf/base`` (a test holds them to it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from multimodal_suite.common.device import MixedPrecision
from multimodal_suite.common.images import DEFAULT_MAX_IMAGE_PIXELS
from multimodal_suite.common.models import ModelSpec
from multimodal_suite.common.paths import name_parameter, safe_component
from multimodal_suite.common.ray import RayOptions

from .calibration import CalibrationConfig
from .probe import ProbeConfig
from .segmentation import SegmenterConfig


@dataclass(frozen=True)
class ModelsParams:
    """``tagging.models``: what cuts objects out of images and what embeds them.

    Args:
        segmenter: segmenter configuration (see :class:`~.segmentation.SegmenterConfig`).
        clip_model: model spec of the crop image encoder.
    """

    segmenter: SegmenterConfig = field(default_factory=lambda: SegmenterConfig(
        backend="sam", weights=ModelSpec(source="path", family="sam", path="sam2.1_b.pt",
                                         options={"allow_download": False})))
    clip_model: ModelSpec = ModelSpec(source="hf", family="clip", id="openai/clip-vit-base-patch32")


@dataclass(frozen=True)
class BatchingParams:
    """``tagging.batching``: batch sizes of each stage.

    Args:
        batch_images: images per segmentation batch.
        batch_clips: crops per image model batch (halved on out-of-memory, grown back).
        batch_faiss: queries per FAISS search batch.
    """

    batch_images: int = 24
    batch_clips: int = 192
    batch_faiss: int = 20_000


@dataclass(frozen=True)
class SourceParams:
    """``tagging.source``: which source shards are embedded, and where.

    Args:
        start_shard: first position in the sorted shard list (inclusive).
        end_shard: last position (exclusive); ``None``: to the last shard.
        engine: ``in_process`` (this process) or ``ray_data`` (an actor pool of segmenter + image model replicas).
        device: ``auto`` (cuda → mps → cpu) or a torch device string, for the image model.
        mixed_precision: ``auto`` (reduced precision where the device has it natively), or force it on/off.
        max_image_pixels: a sample whose image header claims more pixels is an error row, never decoded.
        ray: Ray Data options of the ``ray_data`` engine, with the resources of a local Ray it starts.
    """

    start_shard: int = 0
    end_shard: int | None = None
    engine: Literal["in_process", "ray_data"] = "in_process"
    device: str = "auto"
    mixed_precision: MixedPrecision = "auto"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    ray: RayOptions = RayOptions(object_store_gb=2)


@dataclass(frozen=True)
class IndexParams:
    """``tagging.index``: the FAISS index over the source crops.

    Args:
        factory: ``auto`` (chosen from size and memory budget) or a FAISS factory string, e.g. ``IVF1024,Flat``.
        memory_budget_mb: memory the index may take; ``None``: no limit.
        target_recall: recall@k the search parameter is tuned to.
        k: neighbours the recall is measured at.
        train_sample: vectors an index that needs training is trained on.
        held_out_queries: vectors held out to measure the recall.
        seed: seed of the samples (and of the calibration split).
        calibration: the held-out source images the per-tag vote thresholds are chosen on.
        probe: the linear probe per tag trained beside the index.
    """

    factory: str = "auto"
    memory_budget_mb: float | None = None
    target_recall: float = 0.95
    k: int = 10
    train_sample: int = 100_000
    held_out_queries: int = 1000
    seed: int = 0
    calibration: CalibrationConfig = CalibrationConfig()
    probe: ProbeConfig = ProbeConfig()


@dataclass(frozen=True)
class ContactSheetParams:
    """``tagging.target.contact_sheet``: the picture of a folder's crops and their tags.

    Args:
        max_crops: crops shown, the first of the crop table.
        thumb_size: side of a thumbnail in pixels.
    """

    max_crops: int = 48
    thumb_size: int = 96


class TargetFolder(str):
    """``tagging.target.folder``: the name of one folder directly under the target images' folder.

    A value the command line's YAML typed as a number or boolean (``00100`` → 64) is refused with the quoted form
    that keeps it a string; a name with a separator or ``..`` is refused as it would leave the data folder.
    """

    @classmethod
    def parse(cls, value: Any) -> TargetFolder:
        return cls(name_parameter(value, "tagging.target.folder"))


@dataclass(frozen=True)
class TargetParams:
    """``tagging.target``: the folder that is tagged and how crops vote.

    Args:
        folder: the target folder, one name (``--params "tagging.target.folder='00291'"``).
        method: ``knn`` (kNN vote), ``probe`` (linear probe) or ``both`` (mean of their calibrated scores); each
            keeps a tag when the image's score reaches the tag's threshold calibrated by ``tagging_index``.
        k: neighbours that vote (the thresholds are calibrated at this ``k``).
        min_votes: neighbours that must carry a tag for a crop to keep it in the uncalibrated vote, which
            ``tagging_evaluate`` reports as ``knn_min_votes`` beside the methods.
        device: ``auto`` (cuda → mps → cpu) or a torch device string, for the image model.
        mixed_precision: ``auto`` (reduced precision where the device has it natively), or force it on/off.
        max_image_pixels: an image of the folder (or a saved crop) whose header claims more pixels is rejected
            without being decoded.
        contact_sheet: the contact sheet of the folder's crops.
    """

    folder: TargetFolder = TargetFolder("00290")
    method: Literal["knn", "probe", "both"] = "both"
    k: int = 10
    min_votes: int = 3
    device: str = "auto"
    mixed_precision: MixedPrecision = "auto"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    contact_sheet: ContactSheetParams = ContactSheetParams()

    def __post_init__(self) -> None:
        # Also guards instances built directly, which skip TargetFolder.parse.
        safe_component(self.folder, "tagging.target.folder")


PARAMETER_SECTIONS: dict[str, type] = {
    "tagging.models": ModelsParams,
    "tagging.batching": BatchingParams,
    "tagging.source": SourceParams,
    "tagging.index": IndexParams,
    "tagging.target": TargetParams,
}
