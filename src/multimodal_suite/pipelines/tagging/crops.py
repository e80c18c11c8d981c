"""Segment → crop → embed: objects cut out of images and embedded with an image model (CLIP), one code path for
every caller.

:class:`CropEmbedder` holds a segmenter (:mod:`~multimodal_suite.pipelines.tagging.segmentation`) and an image model
(:mod:`~multimodal_suite.common.models`) side by side, as one unit of work: the in-process loop, the Ray Data
actor pool (:mod:`~multimodal_suite.pipelines.tagging.ray_source_crops`) and the target-folder nodes all call it, so they
give the same crops and the same vectors. Crops live in memory only; what is kept is up to the caller.

Example::

    embedder = CropEmbedder({"backend": "classical", "min_area": 150}, {"source": "config", "family": "clip",
                            "config": {...}}, batch_clips=64)
    results = embedder.process([image_bytes_0, image_bytes_1])   # per image: [(Crop, vector)] or a reason
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from multimodal_suite.common.batching import DynamicBatcher
from multimodal_suite.common.device import MixedPrecision, autocast_dtype, pick_device
from multimodal_suite.common.encoding import embed_prepared
from multimodal_suite.common.hashing import hash_object
from multimodal_suite.common.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    decode_image,
    pixel_limit,
    resize_for_model,
)
from multimodal_suite.common.models import LoadedModel, ModelSpec, load_model

from .segmentation import Crop, Segmenter, SegmenterConfig, build_segmenter, crop_objects

logger = logging.getLogger(__name__)

CropResult = list[tuple[Crop, np.ndarray]]
"""The crops of one image with their embeddings ([D] float32 each), in crop order."""


def crop_pipeline_hash(segmenter: Mapping[str, Any] | SegmenterConfig, model: Mapping[str, Any] | ModelSpec) -> str:
    """Stable hash of a segmenter configuration and an image model spec: what a crop embedding depends on."""
    return hash_object({"segmenter": SegmenterConfig.from_dict(segmenter).config_hash,
                        "model": ModelSpec.parse(model).spec_hash})


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Encoded image bytes → [H, W, 3] uint8 RGB; raises :class:`ImageDecodeError` with the reason (an image
    whose header claims more than ``max_pixels`` pixels is refused before it is decoded)."""
    return np.asarray(decode_image(data, max_pixels=max_pixels), dtype=np.uint8)


def segment_images(
    segmenter: Segmenter, images: Sequence[bytes], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> list[list[Crop] | str]:
    """Decode and segment a batch of encoded images → per image its crops, or why it cannot be used.

    An image without masks gives one whole-image crop (``Crop.whole_image``); one past ``max_pixels`` (header size)
    is a reason, like any other image that does not decode.
    """
    limit = pixel_limit(max_pixels)
    decoded: list[np.ndarray | str] = []
    for data in images:
        try:
            decoded.append(decode_rgb(data, limit))
        except ImageDecodeError as error:
            decoded.append(error.reason)
    good = [i for i, item in enumerate(decoded) if not isinstance(item, str)]
    masks = segmenter.segment([decoded[i] for i in good]) if good else []
    results: list[list[Crop] | str] = list(decoded)  # type: ignore[arg-type]
    for i, image_masks in zip(good, masks):
        results[i] = crop_objects(decoded[i], image_masks, segmenter.config)
    return results


class CropEncoder:
    """An image model that embeds crops of any size, ``batch_clips`` at a time.

    Args:
        model: image model spec (``clip``, ``siglip_vision`` or ``timm`` family), or a model already loaded.
        batch_clips: largest batch of crops the model sees (halved on out-of-memory, grown back).
        device: ``auto`` (cuda → mps → cpu) or a torch device string.
        mixed_precision: ``auto`` (fp16 on GPUs, bf16 on CPUs with bf16 instructions, else fp32), or on/off.
    """

    def __init__(self, model: Mapping[str, Any] | ModelSpec | LoadedModel, *, batch_clips: int = 64,
                 device: str | None = "auto", mixed_precision: MixedPrecision = "auto") -> None:
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        if self.model.image_size is None:
            raise ValueError(f"crop embedding needs an image model; {self.model.spec.describe()} is not one")
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, mixed_precision)
        self.model.module.to(self.device)
        self.batcher = DynamicBatcher(max(1, int(batch_clips)))

    @property
    def dim(self) -> int:
        """Embedding width."""
        return self.model.output_dim

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embed crop pixel arrays ([h, w, 3] uint8, any sizes) → float32 [n, D], in input order."""
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        size = int(self.model.image_size)
        resized = [resize_for_model(Image.fromarray(crop), size) for crop in crops]
        vectors = self.batcher.map(
            list(range(len(resized))),
            lambda rows: list(embed_prepared(self.model, [resized[i] for i in rows], self.device, self.dtype)),
        )
        return np.stack(vectors).astype(np.float32, copy=False)


class CropEmbedder:
    """A segmenter and an image model used together: images in, crops with embeddings out.

    Args:
        segmenter: segmenter configuration (see :class:`~multimodal_suite.pipelines.tagging.segmentation.SegmenterConfig`).
        model: image model spec (``clip``, ``siglip_vision`` or ``timm`` family).
        batch_clips: largest batch of crops the image model sees.
        device: ``auto`` (cuda → mps → cpu) or a torch device string, for the image model.
        mixed_precision: ``auto`` (fp16 on GPUs, bf16 on CPUs with bf16 instructions, else fp32), or on/off.
        max_image_pixels: an image whose header claims more pixels is skipped with a reason, never decoded.
    """

    def __init__(
        self,
        segmenter: Mapping[str, Any] | SegmenterConfig,
        model: Mapping[str, Any] | ModelSpec,
        *,
        batch_clips: int = 64,
        device: str | None = "auto",
        mixed_precision: MixedPrecision = "auto",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.max_image_pixels = pixel_limit(max_image_pixels)
        self.segmenter = build_segmenter(SegmenterConfig.from_dict(segmenter))
        self.encoder = CropEncoder(model, batch_clips=batch_clips, device=device, mixed_precision=mixed_precision)
        self.pipeline_hash = crop_pipeline_hash(self.segmenter.config, self.encoder.model.spec)
        logger.info("Crop embedder: %s; image model %s (%d-d) on %s", self.segmenter.describe(),
                    self.encoder.model.spec.describe(), self.dim, self.encoder.device)

    @property
    def dim(self) -> int:
        """Embedding width."""
        return self.encoder.dim

    def process(self, images: Sequence[bytes]) -> list[CropResult | str]:
        """Segment, crop and embed a batch of images → per image ``[(Crop, vector)]``, or why it was skipped.

        All crops of the batch go through the image model together, ``batch_clips`` at a time.
        """
        segmented = segment_images(self.segmenter, images, self.max_image_pixels)
        flat = [crop for item in segmented if not isinstance(item, str) for crop in item]
        vectors = self.encoder.embed_crops([crop.image for crop in flat])
        results: list[CropResult | str] = []
        position = 0
        for item in segmented:
            if isinstance(item, str):
                results.append(item)
                continue
            results.append([(crop, vectors[position + j]) for j, crop in enumerate(item)])
            position += len(item)
        return results
