"""Object masks for images behind one function, and crops cut from them.

Backends (``SegmenterConfig.backend``):

- ``classical`` — scikit-image only, no weights: estimates the background from the image border (a colour plus a
  linear gradient, in Lab), marks pixels that differ from it by more than the border's own noise, and returns the
  connected foreground regions. Finds coloured shapes and photo cut-outs on a plain or lightly textured background;
  the offline demo uses it. ``classical_method: felzenszwalb`` decides per Felzenszwalb superpixel instead of per
  pixel, which keeps textured objects whole.
- ``sam`` — ultralytics SAM / MobileSAM / SAM 2 in "segment everything" mode (a grid of point prompts).
- ``fastsam`` — ultralytics FastSAM.
- ``yolo_seg`` — an ultralytics YOLO segmentation model (``yolo11n-seg.pt``, ``yolo26n-seg.pt``, ...).

``weights`` of the ultralytics backends is a model spec of the backend's family
(:mod:`multimodal_suite.common.models.segmenters`; ``family`` defaults to the backend):
``{source: path, path: sam2.1_b.pt}`` is a local file or a bare ultralytics file name found in ultralytics' weights
directory, and nothing is downloaded unless the spec says ``allow_download: true``: a missing file raises the one
:class:`~multimodal_suite.common.models.ModelUnavailableError` at once. ``{source: config, config: {architecture:
mobile_sam}, seed: 0}`` (``yolo_seg``: ``architecture: yolo26n-seg``) builds the architecture with seeded RANDOM
weights, for offline tests of the backend's code path; its masks are arbitrary.

Every backend returns masks through the same rules: empty masks and masks below ``min_area`` pixels are dropped,
the rest are sorted by area (largest first; ties by position) and the first ``max_masks`` kept.

Example::

    segmenter = build_segmenter(SegmenterConfig(backend="classical", min_area=150))
    masks = segmenter.segment([image])[0]          # image: [H, W, 3] uint8 RGB
    crops = crop_objects(image, masks, segmenter.config)
"""
from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from multimodal_suite.common.batching import DynamicBatcher
from multimodal_suite.common.device import pick_device
from multimodal_suite.common.hashing import hash_object
from multimodal_suite.common.models import ModelSpec, build_module
from multimodal_suite.common.models.segmenters import import_ultralytics_offline

logger = logging.getLogger(__name__)

BACKENDS = ("classical", "sam", "fastsam", "yolo_seg")
BACKGROUND_MODES = ("keep", "mask")
CLASSICAL_METHODS = ("threshold", "felzenszwalb")
NEUTRAL_GREY = 128
DEFAULT_IMGSZ = {"sam": 1024, "fastsam": 640, "yolo_seg": 640}


@dataclass
class SegmenterConfig:
    """How images are segmented and cropped.

    Args:
        backend: one of ``classical``, ``sam``, ``fastsam``, ``yolo_seg``.
        weights: ultralytics backends: a model spec of the backend's family (a mapping is parsed, ``family``
            defaulting to the backend): ``source: path`` (a local weights file or a bare ultralytics file name,
            ``allow_download: true`` to fetch a missing one) or ``source: config`` (seeded random weights, tests
            only). ``classical`` takes none (null).
        min_area: masks with fewer pixels are dropped.
        max_masks: at most this many masks per image, the largest first.
        bbox_padding: pixels added on every side of a crop's box (clipped to the image).
        background: ``keep`` crops the box as is; ``mask`` sets crop pixels outside the object to neutral grey.
        device: ``auto`` (cuda → mps → cpu) or a torch device string; ultralytics backends only.
        imgsz: ultralytics inference size in pixels; None means 1024 for ``sam``, 640 otherwise.
        batch_size: images per ultralytics call for ``fastsam``/``yolo_seg`` (SAM runs one image at a time).
        score_threshold: ultralytics drops masks whose confidence is not above this (in [0, 1]).
        iou_threshold: ultralytics NMS IoU threshold between masks' boxes.
        sam_points_per_side: SAM "segment everything" prompt grid is this many points on a side.
        sam_pred_iou_thresh: SAM drops masks whose predicted IoU is not above this (0 keeps every mask).
        sam_stability_thresh: SAM drops masks whose stability score is not above this (0 keeps every mask).
        classical_method: ``threshold`` (per pixel) or ``felzenszwalb`` (per superpixel).
        classical_min_contrast: smallest Lab colour distance (ΔE) from the background that counts as foreground.
        classical_noise_factor: the foreground threshold is at least this times the 99th percentile of the border's
            distance to the fitted background, so a textured background does not light up.
        classical_sigma: Gaussian smoothing (pixels) before comparing colours; also Felzenszwalb's sigma.
        classical_max_side: images are analysed at most this large (longest side), masks are returned at full size.
        classical_max_area_fraction: a region covering more of the image than this is background, not an object.
        felzenszwalb_scale: Felzenszwalb's scale (larger → larger superpixels).
        felzenszwalb_min_size: Felzenszwalb's smallest superpixel in pixels (at analysis size).
    """

    backend: str = "classical"
    weights: ModelSpec | None = None
    min_area: int = 150
    max_masks: int = 16
    bbox_padding: int = 4
    background: str = "keep"
    device: str = "auto"
    imgsz: int | None = None
    batch_size: int = 8
    score_threshold: float = 0.25
    iou_threshold: float = 0.7
    sam_points_per_side: int = 32
    sam_pred_iou_thresh: float = 0.88
    sam_stability_thresh: float = 0.95
    classical_method: str = "threshold"
    classical_min_contrast: float = 12.0
    classical_noise_factor: float = 1.5
    classical_sigma: float = 1.0
    classical_max_side: int = 512
    classical_max_area_fraction: float = 0.9
    felzenszwalb_scale: float = 200.0
    felzenszwalb_min_size: int = 40

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"segmenter backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.background not in BACKGROUND_MODES:
            raise ValueError(f"segmenter background must be one of {BACKGROUND_MODES}, got {self.background!r}")
        if self.classical_method not in CLASSICAL_METHODS:
            raise ValueError(f"classical_method must be one of {CLASSICAL_METHODS}, got {self.classical_method!r}")
        self.weights = _weights_spec(self.backend, self.weights)
        for name in ("min_area", "bbox_padding"):
            if getattr(self, name) < 0:
                raise ValueError(f"segmenter {name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_masks", "batch_size", "sam_points_per_side", "classical_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"segmenter {name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | "SegmenterConfig") -> "SegmenterConfig":
        """Build from a parameters dict; an unknown key is an error that lists the known ones."""
        if isinstance(params, SegmenterConfig):
            return params
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown segmenter parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain values (``weights`` as its spec dict); :meth:`from_dict` reads it back."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**values, "weights": self.weights.to_dict() if self.weights is not None else None}

    @property
    def config_hash(self) -> str:
        """Stable hash of the configuration; part of the cache key of anything computed from its crops."""
        return hash_object(self.to_dict())

    @property
    def inference_size(self) -> int:
        return int(self.imgsz or DEFAULT_IMGSZ.get(self.backend, 640))


def _weights_spec(backend: str, weights: ModelSpec | Mapping[str, Any] | None) -> ModelSpec | None:
    """``weights`` as a spec of the backend's family; raises ValueError naming the accepted forms."""
    forms = ("a model spec: {source: path, path: <weights file or ultralytics file name>} or "
             "{source: config, config: {architecture: <name>}, seed: 0}")
    if backend == "classical":
        if weights is not None:
            raise ValueError(f"the `classical` segmenter backend takes no weights (set `weights: null`), "
                             f"got {weights!r}")
        return None
    if weights is None:
        raise ValueError(f"segmenter backend {backend!r} needs `weights`, {forms}; the `classical` backend needs none")
    if not isinstance(weights, (ModelSpec, Mapping)):
        raise ValueError(f"segmenter weights must be {forms}; got {weights!r}")
    spec = ModelSpec.parse(weights if isinstance(weights, ModelSpec) else {"family": backend, **weights})
    if spec.family != backend:
        raise ValueError(f"segmenter backend {backend!r} needs weights of family {backend!r}, got {spec.family!r}")
    return spec


@dataclass
class Mask:
    """One object mask of an image.

    Attributes:
        mask: [H, W] bool, the image's size.
        bbox: [x, y, w, h] ints, the tight box of ``mask``.
        area: pixels in ``mask``.
        score: the backend's confidence in [0, 1] (``classical``: mean colour distance to the background / 100).
    """

    mask: np.ndarray
    bbox: list[int]
    area: int
    score: float


@dataclass
class Crop:
    """One object cut out of an image (or the whole image when nothing was found).

    Attributes:
        crop_id: position of the crop among its image's crops (0, 1, ...).
        image: [h, w, 3] uint8 pixels of ``bbox``.
        bbox: [x, y, w, h] ints in the source image, padded by ``bbox_padding`` and clipped to the image.
        area: object pixels (the whole image's pixel count for a whole-image crop).
        whole_image: True for the single crop of an image without masks.
    """

    crop_id: int
    image: np.ndarray
    bbox: list[int]
    area: int
    whole_image: bool = False


def mask_from_array(mask: np.ndarray, score: float) -> Mask:
    """A :class:`Mask` with its box and area computed from a bool [H, W] array."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return Mask(mask=mask, bbox=[0, 0, 0, 0], area=0, score=float(score))
    x, y = int(cols[0]), int(rows[0])
    bbox = [x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1]
    return Mask(mask=mask, bbox=bbox, area=int(mask.sum()), score=float(score))


def select_masks(masks: Sequence[Mask], min_area: int, max_masks: int) -> list[Mask]:
    """Drop empty masks and those below ``min_area``, then keep the ``max_masks`` largest.

    Sorted by area (descending), ties by box top, left, then score (descending), so the order never depends on the
    backend's output order.
    """
    kept = [m for m in masks if m.area > 0 and m.area >= min_area]
    kept.sort(key=lambda m: (-m.area, m.bbox[1], m.bbox[0], -m.score))
    return kept[:max_masks]


def _padded_box(bbox: Sequence[int], padding: int, height: int, width: int) -> list[int]:
    x, y, w, h = (int(v) for v in bbox)
    x0, y0 = max(0, x - padding), max(0, y - padding)
    x1, y1 = min(width, x + w + padding), min(height, y + h + padding)
    return [x0, y0, x1 - x0, y1 - y0]


def crop_objects(image: np.ndarray, masks: Sequence[Mask], config: SegmenterConfig) -> list[Crop]:
    """Cut one crop per mask out of ``image``; an image without masks gives one whole-image crop.

    Args:
        image: [H, W, 3] uint8.
        masks: the image's masks (from :meth:`Segmenter.segment`), in the order the crops should take.
        config: ``bbox_padding`` and ``background`` are used.

    Returns:
        Crops numbered 0, 1, ... in mask order; ``[Crop(0, image, [0, 0, W, H], H*W, whole_image=True)]`` without
        masks.
    """
    _check_image(image, 0)
    height, width = image.shape[:2]
    if not masks:
        return [Crop(crop_id=0, image=image.copy(), bbox=[0, 0, width, height], area=height * width,
                     whole_image=True)]
    crops = []
    for crop_id, mask in enumerate(masks):
        if mask.mask.shape != (height, width):
            raise ValueError(f"mask {crop_id} has shape {mask.mask.shape}, the image is {(height, width)}")
        x, y, w, h = _padded_box(mask.bbox, config.bbox_padding, height, width)
        pixels = image[y : y + h, x : x + w].copy()
        if config.background == "mask":
            pixels[~mask.mask[y : y + h, x : x + w]] = NEUTRAL_GREY
        crops.append(Crop(crop_id=crop_id, image=pixels, bbox=[x, y, w, h], area=mask.area))
    return crops


def _check_image(image: Any, index: int) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        described = (f"shape {image.shape} {image.dtype}" if isinstance(image, np.ndarray)
                     else type(image).__name__)
        raise ValueError(f"image {index} of the batch: expected an [H, W, 3] uint8 RGB array, got {described}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index} of the batch is empty (shape {image.shape})")


class Segmenter(ABC):
    """A loaded backend; :meth:`segment` maps a batch of images to their masks."""

    def __init__(self, config: SegmenterConfig, description: str) -> None:
        self.config = config
        self.description = description

    def segment(self, images: Sequence[np.ndarray]) -> list[list[Mask]]:
        """Masks of every image.

        Args:
            images: [H, W, 3] uint8 RGB arrays (sizes may differ).

        Returns:
            One list per image of :class:`Mask` ([H, W] bool each), largest first, at most ``max_masks``.
        """
        images = list(images)
        for index, image in enumerate(images):
            _check_image(image, index)
        if not images:
            return []
        start = time.perf_counter()
        selected = [select_masks(masks, self.config.min_area, self.config.max_masks)
                    for masks in self._segment_batch(images)]
        logger.debug("%s: %d images, %d masks in %.2f s", self.config.backend, len(images),
                     sum(len(masks) for masks in selected), time.perf_counter() - start)
        return selected

    __call__ = segment

    def describe(self) -> str:
        """Which backend and weights, for run logs."""
        return self.description

    @abstractmethod
    def _segment_batch(self, images: list[np.ndarray]) -> list[list[Mask]]:
        """Every mask the backend finds in each image, before :func:`select_masks`."""


# --- classical (scikit-image) -------------------------------------------------------------------------------------


class ClassicalSegmenter(Segmenter):
    """Foreground = pixels (or superpixels) whose colour differs from a background fitted to the image border."""

    def _segment_batch(self, images: list[np.ndarray]) -> list[list[Mask]]:
        return [classical_masks(image, self.config) for image in images]


def _border_mask(height: int, width: int) -> np.ndarray:
    band = max(2, int(round(0.02 * min(height, width))))
    border = np.zeros((height, width), dtype=bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    return border


def _background_distance(lab: np.ndarray, min_contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel to the border's background model, and the border inliers' distances.

    The model is a colour plus a linear gradient per Lab channel, fitted by least squares to the border pixels near
    the border's median colour (so objects touching the edge do not pull it).
    """
    height, width = lab.shape[:2]
    border = _border_mask(height, width)
    samples = lab[border]  # [n, 3]
    median = np.median(samples, axis=0)
    inliers = np.linalg.norm(samples - median, axis=1) <= min_contrast
    ys, xs = np.mgrid[0:height, 0:width]
    design = np.stack([np.ones_like(xs, dtype=np.float64), xs / max(width - 1, 1), ys / max(height - 1, 1)], axis=-1)
    if inliers.sum() >= max(16, 0.1 * inliers.size):
        coef, *_ = np.linalg.lstsq(design[border][inliers], samples[inliers], rcond=None)  # [3, 3]
        background = design @ coef  # [H, W, 3]
    else:  # a busy border: fall back to one colour
        background = np.broadcast_to(median, lab.shape)
        inliers = np.ones(len(samples), dtype=bool)
    distance = np.linalg.norm(lab - background, axis=-1)  # [H, W]
    return distance, distance[border][inliers]


def _object_labels(image: np.ndarray, config: SegmenterConfig) -> tuple[np.ndarray, np.ndarray]:
    """Label map [h, w] of the objects in ``image`` (0 = background) and each label's mean colour contrast.

    Regions are found on a smoothed copy (noise and texture do not split or speckle them), then trimmed to the
    pixels that differ from the background themselves (smoothing bleeds a region a pixel or two outwards); holes
    enclosed by an object stay part of it.
    """
    from scipy import ndimage as ndi
    from skimage import color, filters, measure, segmentation

    smoothed = filters.gaussian(image.astype(np.float64) / 255.0, sigma=config.classical_sigma, channel_axis=-1,
                                preserve_range=True)
    distance, border_distance = _background_distance(color.rgb2lab(smoothed), config.classical_min_contrast)
    threshold = max(config.classical_min_contrast, config.classical_noise_factor * np.percentile(border_distance, 99))
    if config.classical_method == "felzenszwalb":
        superpixels = segmentation.felzenszwalb(image, scale=config.felzenszwalb_scale, sigma=config.classical_sigma,
                                                min_size=config.felzenszwalb_min_size)
        mean_distance = np.asarray(ndi.mean(distance, labels=superpixels, index=np.arange(superpixels.max() + 1)))
        foreground = (mean_distance > threshold)[superpixels]
    else:
        foreground = distance > threshold
    foreground = ndi.binary_opening(foreground, structure=np.ones((3, 3), dtype=bool))
    regions = measure.label(ndi.binary_fill_holes(foreground), connectivity=2)

    raw_distance, raw_border = _background_distance(color.rgb2lab(image.astype(np.float64) / 255.0),
                                                    config.classical_min_contrast)
    differs = raw_distance > max(config.classical_min_contrast, np.percentile(raw_border, 99))
    labels = np.zeros_like(regions)
    for label, box in enumerate(ndi.find_objects(regions), start=1):
        if box is not None:
            labels[box][ndi.binary_fill_holes((regions[box] == label) & differs[box])] = label
    counts = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    contrast = np.bincount(labels.ravel(), weights=distance.ravel(), minlength=labels.max() + 1) / np.maximum(counts, 1)
    return labels, contrast


def classical_masks(image: np.ndarray, config: SegmenterConfig) -> list[Mask]:
    """Object masks of one [H, W, 3] uint8 image, before the max_masks selection.

    Images larger than ``classical_max_side`` are analysed downscaled; the label map is scaled back up (nearest)
    so masks always have the image's size.
    """
    from skimage import transform

    height, width = image.shape[:2]
    scale = min(1.0, config.classical_max_side / max(height, width))
    small = image
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        small = (transform.resize(image, size, order=1, anti_aliasing=True, preserve_range=True)
                 .round().clip(0, 255).astype(np.uint8))
    labels, contrast = _object_labels(small, config)
    if labels.max() == 0:
        return []
    if scale < 1.0:
        rows = np.minimum((np.arange(height) * labels.shape[0] / height).astype(int), labels.shape[0] - 1)
        cols = np.minimum((np.arange(width) * labels.shape[1] / width).astype(int), labels.shape[1] - 1)
        labels = labels[rows[:, None], cols[None, :]]
    areas = np.bincount(labels.ravel(), minlength=len(contrast))
    max_area = config.classical_max_area_fraction * height * width
    return [
        mask_from_array(labels == label, score=min(1.0, float(contrast[label]) / 100.0))
        for label in range(1, len(contrast))
        if 0 < areas[label] and config.min_area <= areas[label] <= max_area
    ]


# --- ultralytics backends ------------------------------------------------------------------------------------------


def _ultralytics_device(device: torch.device) -> str:
    if device.type == "cuda":
        return str(device.index or 0)
    return device.type


def _results_to_masks(result: Any, shape: tuple[int, int]) -> list[Mask]:
    """Masks of one ultralytics ``Results`` at the image's full size."""
    if result.masks is None or len(result.masks) == 0:
        return []
    data = result.masks.data
    if tuple(data.shape[1:]) != shape:  # only when the predictor returned model-size masks
        data = torch.nn.functional.interpolate(data[None].float(), size=shape, mode="bilinear")[0]
    arrays = (data > 0.5).cpu().numpy()  # [N, H, W]
    scores = result.boxes.conf.float().cpu().numpy() if result.boxes is not None else np.ones(len(arrays))
    return [mask_from_array(array, float(score)) for array, score in zip(arrays, scores)]


def _keep_all_above(threshold: float) -> float:
    """SAM's generate() keeps scores strictly above a threshold; a threshold of 0 here means keep everything."""
    return threshold if threshold > 0 else -math.inf


class SamSegmenter(Segmenter):
    """SAM / MobileSAM / SAM 2 through ultralytics' SAM predictor, "segment everything" with a point grid."""

    def __init__(self, config: SegmenterConfig, model: torch.nn.Module, description: str) -> None:
        super().__init__(config, description)
        from ultralytics.models.sam.modules.sam import SAM2Model
        from ultralytics.models.sam.predict import Predictor, SAM2Predictor

        predictor_class = SAM2Predictor if isinstance(model, SAM2Model) else Predictor
        overrides = {"imgsz": config.inference_size, "conf": config.score_threshold,
                     "iou": config.iou_threshold, "device": _ultralytics_device(pick_device(config.device)),
                     "save": False, "verbose": False}
        self.predictor = predictor_class(overrides=overrides)
        self.predictor.setup_model(model=model, verbose=False)

    def _segment_one(self, image: np.ndarray) -> list[Mask]:
        config = self.config
        results = self.predictor(
            source=np.ascontiguousarray(image[..., ::-1]),  # ultralytics reads arrays as BGR
            points_stride=config.sam_points_per_side,
            conf_thres=_keep_all_above(config.sam_pred_iou_thresh),
            stability_score_thresh=_keep_all_above(config.sam_stability_thresh),
        )
        return _results_to_masks(results[0], image.shape[:2])

    def _segment_batch(self, images: list[np.ndarray]) -> list[list[Mask]]:
        return [self._segment_one(image) for image in images]  # the SAM predictor takes one image per call


class UltralyticsSegmenter(Segmenter):
    """FastSAM or a YOLO segmentation model through ultralytics' ``Model.predict``, in batches."""

    def __init__(self, config: SegmenterConfig, model: Any, description: str) -> None:
        super().__init__(config, description)
        self.model = model
        self.device = _ultralytics_device(pick_device(config.device))

    def _predict(self, batch: Sequence[np.ndarray]) -> list[list[Mask]]:
        config = self.config
        results = self.model.predict(
            [np.ascontiguousarray(image[..., ::-1]) for image in batch],  # ultralytics reads arrays as BGR
            imgsz=config.inference_size, conf=config.score_threshold, iou=config.iou_threshold,
            device=self.device, retina_masks=True, batch=len(batch), save=False, verbose=False,
        )
        return [_results_to_masks(result, image.shape[:2]) for result, image in zip(results, batch)]

    def _segment_batch(self, images: list[np.ndarray]) -> list[list[Mask]]:
        return DynamicBatcher(batch_size=self.config.batch_size).map(images, self._predict)


ULTRALYTICS_SEGMENTERS: dict[str, type[Segmenter]] = {"sam": SamSegmenter, "fastsam": UltralyticsSegmenter,
                                                      "yolo_seg": UltralyticsSegmenter}


def build_segmenter(config: SegmenterConfig | Mapping[str, Any]) -> Segmenter:
    """Load the backend named by ``config`` (a :class:`SegmenterConfig` or its parameters dict).

    Raises:
        ModelUnavailableError: an ultralytics backend's weights file is missing (or not loadable) here; the message
            names ``kedro run --env demo`` and the ``source: path`` option.
    """
    config = SegmenterConfig.from_dict(config)
    if config.backend == "classical":
        method = config.classical_method
        return ClassicalSegmenter(config, f"classical segmenter ({method}, scikit-image; no weights)")
    import_ultralytics_offline()
    model = build_module(config.weights)
    description = f"{config.backend} segmenter, {config.weights.describe()}"
    if config.weights.source == "config":
        logger.warning("%s; its masks are arbitrary, for offline tests of the %s code path only", description,
                       config.backend)
    return ULTRALYTICS_SEGMENTERS[config.backend](config, model, description)
