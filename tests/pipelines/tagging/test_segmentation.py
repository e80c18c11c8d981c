import logging
import socket

import numpy as np
import pytest
import ultralytics.utils
from PIL import Image, ImageDraw

from multimodal_suite.common.models import ModelSpec, ModelUnavailableError, family
from multimodal_suite.pipelines.tagging.segmentation import (
    NEUTRAL_GREY,
    Crop,
    Mask,
    SegmenterConfig,
    build_segmenter,
    crop_objects,
    mask_from_array,
    select_masks,
)

RANDOM_MOBILE_SAM = {"source": "config", "config": {"architecture": "mobile_sam"}, "seed": 0}
RANDOM_YOLO_SEG = {"source": "config", "config": {"architecture": "yolo26n-seg"}, "seed": 0}
BACKGROUND = (236, 232, 224)
# (kind, [x0, y0, x1, y1] inclusive, colour): what PIL draws, so the true box is [x0, y0, x1 - x0 + 1, y1 - y0 + 1]
SHAPES = [
    ("rectangle", (20, 20, 70, 60), (215, 40, 40)),
    ("ellipse", (110, 30, 170, 90), (40, 80, 215)),
    ("ellipse", (40, 100, 90, 145), (40, 160, 60)),
]


def _box(corners) -> list[int]:
    x0, y0, x1, y1 = corners
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def draw_shapes(size=(200, 160), noise: float = 0.0, gradient: float = 0.0, seed: int = 0) -> np.ndarray:
    """Three solid shapes on a plain background, optionally with pixel noise and a left-to-right light falloff."""
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    for kind, corners, colour in SHAPES:
        getattr(draw, kind)(corners, fill=colour)
    pixels = np.asarray(image, dtype=np.float64)
    pixels += np.linspace(-gradient, gradient, size[0])[None, :, None]
    pixels += np.random.default_rng(seed).normal(0.0, noise, pixels.shape) if noise else 0.0
    return pixels.clip(0, 255).astype(np.uint8)


def assert_boxes_close(masks: list[Mask], truth: list[list[int]], tolerance: int) -> None:
    assert len(masks) == len(truth), [m.bbox for m in masks]
    for box in truth:
        nearest = min(masks, key=lambda m: sum(abs(a - b) for a, b in zip(m.bbox, box)))
        assert max(abs(a - b) for a, b in zip(nearest.bbox, box)) <= tolerance, (nearest.bbox, box)


@pytest.fixture(scope="module")
def classical():
    return build_segmenter(SegmenterConfig(backend="classical"))


@pytest.mark.parametrize("method", ["threshold", "felzenszwalb"])
@pytest.mark.parametrize("noise, gradient, tolerance", [(0.0, 0.0, 1), (6.0, 10.0, 3)], ids=["plain", "textured"])
def test_classical_finds_drawn_shapes(method, noise, gradient, tolerance):
    segmenter = build_segmenter({"backend": "classical", "classical_method": method})
    image = draw_shapes(noise=noise, gradient=gradient)

    masks = segmenter.segment([image])[0]

    assert_boxes_close(masks, [_box(corners) for _, corners, _ in SHAPES], tolerance)
    assert [m.area for m in masks] == sorted((m.area for m in masks), reverse=True)
    for mask in masks:
        assert mask.mask.shape == image.shape[:2] and mask.mask.dtype == bool
        assert mask.area == int(mask.mask.sum()) and 0.0 < mask.score <= 1.0
    if noise == 0.0:  # solid shapes are found pixel-exactly
        rectangle = min(masks, key=lambda m: m.bbox[0])
        assert rectangle.area == 51 * 41


def test_classical_finds_photo_cutouts_on_plain_background(classical):
    from skimage import data

    cat = np.asarray(Image.fromarray(data.chelsea()[40:260, 80:360]).resize((112, 88)))
    cup = np.asarray(Image.fromarray(data.coffee()[60:340, 120:460]).resize((80, 64)))
    image = np.full((180, 260, 3), 245, dtype=np.uint8)
    image[20:108, 20:132] = cat
    image[100:164, 160:240] = cup

    masks = classical.segment([image])[0]

    assert_boxes_close(masks, [[20, 20, 112, 88], [160, 100, 80, 64]], tolerance=2)


def test_classical_downscales_large_images_but_returns_full_size_masks():
    segmenter = build_segmenter(SegmenterConfig(classical_max_side=100))
    image = draw_shapes()

    masks = segmenter.segment([image])[0]

    assert all(m.mask.shape == image.shape[:2] for m in masks)
    assert_boxes_close(masks, [_box(corners) for _, corners, _ in SHAPES], tolerance=3)


def test_segment_is_batched_per_image(classical):
    blank = np.full((64, 80, 3), 200, dtype=np.uint8)
    results = classical.segment([draw_shapes(), blank, draw_shapes(noise=4.0)])
    assert [len(masks) for masks in results] == [3, 0, 3]
    assert classical.segment([]) == []
    with pytest.raises(ValueError, match=r"image 1 of the batch: expected an \[H, W, 3\] uint8"):
        classical.segment([blank, blank[..., 0]])


def test_min_area_and_max_masks():
    image = Image.new("RGB", (160, 120), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 59, 59), fill=(215, 40, 40))  # 2500 px
    draw.rectangle((80, 10, 119, 39), fill=(40, 80, 215))  # 1200 px
    draw.rectangle((80, 70, 99, 89), fill=(40, 160, 60))  # 400 px
    draw.rectangle((130, 90, 139, 99), fill=(20, 20, 20))  # 100 px, below the default min_area of 150
    image = np.asarray(image)

    default = build_segmenter(SegmenterConfig()).segment([image])[0]
    assert [m.area for m in default] == [2500, 1200, 400]
    smaller = build_segmenter(SegmenterConfig(min_area=50)).segment([image])[0]
    assert [m.area for m in smaller] == [2500, 1200, 400, 100]
    capped = build_segmenter(SegmenterConfig(min_area=50, max_masks=2)).segment([image])[0]
    assert [m.bbox for m in capped] == [[10, 10, 50, 50], [80, 10, 40, 30]]


def test_select_masks_drops_small_and_empty_then_sorts_deterministically():
    def square(x, y, side):
        array = np.zeros((50, 50), dtype=bool)
        array[y : y + side, x : x + side] = True
        return mask_from_array(array, score=0.5)

    empty = mask_from_array(np.zeros((50, 50), dtype=bool), score=0.9)
    masks = [square(30, 30, 5), square(20, 0, 10), empty, square(0, 20, 10), square(0, 0, 12)]

    kept = select_masks(masks, min_area=30, max_masks=3)

    assert [m.bbox for m in kept] == [[0, 0, 12, 12], [20, 0, 10, 10], [0, 20, 10, 10]]
    assert select_masks(list(reversed(masks)), min_area=30, max_masks=3) == kept
    assert select_masks(masks, min_area=0, max_masks=10)[-1].area == 25  # empty masks never survive
    assert empty.bbox == [0, 0, 0, 0] and empty.area == 0


def test_crop_padding_is_clipped_at_the_image_border():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    corner = np.zeros((40, 60), dtype=bool)
    corner[0:10, 52:60] = True  # touches the top and right edges
    inner = np.zeros((40, 60), dtype=bool)
    inner[20:30, 10:25] = True

    crops = crop_objects(image, [mask_from_array(corner, 1.0), mask_from_array(inner, 1.0)],
                         SegmenterConfig(bbox_padding=4))

    assert [c.crop_id for c in crops] == [0, 1] and not any(c.whole_image for c in crops)
    assert crops[0].bbox == [48, 0, 12, 14]
    assert crops[1].bbox == [6, 16, 23, 18]
    for crop in crops:
        x, y, w, h = crop.bbox
        assert crop.image.shape == (h, w, 3) and crop.image.dtype == np.uint8
        np.testing.assert_array_equal(crop.image, image[y : y + h, x : x + w])
    assert crops[0].area == 80 and crops[1].area == 150


def test_background_masked_vs_kept():
    image = Image.new("RGB", (80, 80), BACKGROUND)
    ImageDraw.Draw(image).ellipse((20, 20, 59, 59), fill=(40, 80, 215))
    image = np.asarray(image)
    masks = build_segmenter(SegmenterConfig()).segment([image])[0]
    assert len(masks) == 1

    kept = crop_objects(image, masks, SegmenterConfig(background="keep"))[0]
    masked = crop_objects(image, masks, SegmenterConfig(background="mask"))[0]

    assert kept.bbox == masked.bbox == [16, 16, 48, 48]
    assert tuple(kept.image[0, 0]) == BACKGROUND
    assert tuple(masked.image[0, 0]) == (NEUTRAL_GREY,) * 3  # outside the object: neutral grey
    assert tuple(masked.image[24, 24]) == tuple(kept.image[24, 24]) == (40, 80, 215)  # the object is untouched
    outside = ~masks[0].mask[16:64, 16:64]
    assert (masked.image[outside] == NEUTRAL_GREY).all()
    np.testing.assert_array_equal(masked.image[~outside], kept.image[~outside])


def test_blank_image_gives_one_whole_image_crop(classical):
    blank = np.full((48, 64, 3), 240, dtype=np.uint8)
    noisy_blank = (blank + np.random.default_rng(0).normal(0, 4, blank.shape)).clip(0, 255).astype(np.uint8)

    for image in (blank, noisy_blank):
        masks = classical.segment([image])[0]
        assert masks == []
        crops = crop_objects(image, masks, SegmenterConfig(background="mask"))
        assert crops == [Crop(crop_id=0, image=crops[0].image, bbox=[0, 0, 64, 48], area=64 * 48, whole_image=True)]
        np.testing.assert_array_equal(crops[0].image, image)


def test_config_validation():
    with pytest.raises(ValueError, match="backend must be one of"):
        SegmenterConfig(backend="watershed")
    with pytest.raises(ValueError, match="background must be one of"):
        SegmenterConfig(background="blur")
    with pytest.raises(ValueError, match=r"unknown segmenter parameter\(s\) \['max_mask'\]"):
        SegmenterConfig.from_dict({"backend": "classical", "max_mask": 3})
    assert SegmenterConfig().config_hash == SegmenterConfig.from_dict({}).config_hash
    assert SegmenterConfig(min_area=10).config_hash != SegmenterConfig().config_hash


def test_weights_are_a_model_spec_of_the_backends_family():
    with pytest.raises(ValueError, match="needs `weights`, a model spec"):
        SegmenterConfig(backend="sam")
    with pytest.raises(ValueError, match="segmenter weights must be a model spec"):
        SegmenterConfig.from_dict({"backend": "sam", "weights": "sam2.1_b.pt"})
    with pytest.raises(ValueError, match="`classical` segmenter backend takes no weights"):
        SegmenterConfig(weights={"source": "path", "path": "sam_b.pt"})
    with pytest.raises(ValueError, match="backend 'sam' needs weights of family 'sam', got 'yolo_seg'"):
        SegmenterConfig(backend="sam", weights={"source": "path", "family": "yolo_seg", "path": "yolo11n-seg.pt"})
    with pytest.raises(ValueError, match="family 'fastsam' loads from source path, not 'config'"):
        SegmenterConfig(backend="fastsam", weights={"source": "config", "config": {"architecture": "FastSAM-s"}})

    config = SegmenterConfig.from_dict({"backend": "sam", "weights": {"source": "path", "path": "sam2.1_b.pt"}})
    assert config.weights == ModelSpec(source="path", family="sam", path="sam2.1_b.pt")
    # the plain form (what Ray actors receive) reads back to the same configuration and cache key
    assert SegmenterConfig.from_dict(config.to_dict()) == config
    assert SegmenterConfig.from_dict(config.to_dict()).config_hash == config.config_hash
    other = SegmenterConfig.from_dict({"backend": "sam", "weights": {"source": "path", "path": "sam2.1_l.pt"}})
    assert other.config_hash != config.config_hash


@pytest.mark.parametrize("backend, weights", [("sam", "sam_b.pt"), ("fastsam", "FastSAM-s.pt"),
                                              ("yolo_seg", "yolo11n-seg.pt"), ("yolo_seg", "/models/none/yolo.pt")])
def test_missing_ultralytics_weights_fail_before_loading_without_network(backend, weights, monkeypatch, tmp_path):
    monkeypatch.setattr(ultralytics.utils, "SETTINGS", {"weights_dir": str(tmp_path / "empty")})
    monkeypatch.chdir(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was contacted")

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded although its weights are missing")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(type(family(backend)), "load_pretrained", no_loading)

    with pytest.raises(ModelUnavailableError) as caught:
        build_segmenter({"backend": backend, "weights": {"source": "path", "path": weights}})
    message = str(caught.value)
    assert f"Cannot load {backend} model {weights!r} (no such file" in message
    assert "`kedro run --env demo`" in message and "`{source: path, path: /models/" in message


def _check_masks(results, images):
    assert len(results) == len(images)
    for masks, image in zip(results, images):
        assert isinstance(masks, list)
        for mask in masks:
            assert isinstance(mask, Mask)
            assert mask.mask.shape == image.shape[:2] and mask.mask.dtype == bool
            assert len(mask.bbox) == 4 and all(isinstance(v, int) for v in mask.bbox)
            x, y, w, h = mask.bbox
            assert 0 <= x and 0 <= y and x + w <= image.shape[1] and y + h <= image.shape[0]
            assert mask.area == int(mask.mask.sum()) > 0 and isinstance(mask.score, float)
        for crop in crop_objects(image, masks, SegmenterConfig(background="mask")):
            assert crop.image.ndim == 3 and crop.image.dtype == np.uint8


def test_sam_backend_end_to_end_with_random_mobile_sam(caplog):
    config = SegmenterConfig(backend="sam", weights=RANDOM_MOBILE_SAM, imgsz=256, device="cpu", min_area=0,
                             max_masks=4, sam_points_per_side=4, score_threshold=0.0, sam_pred_iou_thresh=0.0,
                             sam_stability_thresh=0.0)
    with caplog.at_level(logging.WARNING, logger="multimodal_suite.pipelines.tagging.segmentation"):
        segmenter = build_segmenter(config)
    assert "RANDOM weights" in caplog.text and "RANDOM weights" in segmenter.describe()
    calls = []
    predictor = segmenter.predictor

    def counting_predictor(source, **kwargs):
        calls.append((source.shape, kwargs["points_stride"]))
        return predictor(source=source, **kwargs)

    segmenter.predictor = counting_predictor
    images = [draw_shapes(size=(128, 96)), draw_shapes(size=(96, 72))]

    results = segmenter.segment(images)

    assert calls == [((96, 128, 3), 4), ((72, 96, 3), 4)]  # one image per call, the configured prompt grid
    _check_masks(results, images)
    assert any(results), "with every threshold off, random weights still give some mask"
    assert all(len(masks) <= 4 for masks in results)


def test_yolo_seg_backend_end_to_end_with_random_weights():
    config = SegmenterConfig(backend="yolo_seg", weights=RANDOM_YOLO_SEG, imgsz=96, device="cpu", min_area=0,
                             max_masks=5, batch_size=2, score_threshold=0.0)
    images = [draw_shapes(size=(128, 96)), draw_shapes(size=(96, 72)), draw_shapes(size=(64, 64))]
    segmenter = build_segmenter(config)
    batches = []
    predict = segmenter.model.predict

    def counting_predict(sources, **kwargs):
        batches.append(len(sources))
        return predict(sources, **kwargs)

    segmenter.model.predict = counting_predict

    results = segmenter.segment(images)

    assert batches == [2, 1]  # batch_size images per ultralytics call
    _check_masks(results, images)
    assert all(len(masks) <= 5 for masks in results)
