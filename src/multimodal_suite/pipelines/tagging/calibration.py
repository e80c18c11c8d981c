"""Per-tag decision thresholds calibrated on held-out source images, and the scores of the tagging methods.

Source tags are image-level, so every crop of a source image carries the tags of its neighbours too, and one
``min_votes`` for every tag lets frequent tags through while starving rare ones. Instead each method scores an
image per tag (its best crop's score) and keeps a tag when the score reaches that tag's threshold, chosen for the
best F1 on source images the scorer has not seen:

- the images are split into ``folds`` by a seeded shuffle of their keys (:func:`assign_folds`);
- a kNN query of a held-out image never sees its own crops (the search of an index without that image), and the
  probe scoring a fold is trained on the other images (out-of-fold scores);
- :func:`pick_thresholds` picks, tag by tag, the threshold of the best F1 on those scores.

:func:`calibrate` maps a raw score onto [0, 1] so that 0.5 is the tag's threshold, which makes the methods'
scores comparable: ``both`` is the mean of the calibrated kNN and probe scores, calibrated in turn
(:func:`method_scores`). A tag is kept when its calibrated score is at least :data:`KEEP_AT`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

METHODS = ("knn", "probe", "both")
"""The calibrated tagging methods: kNN vote, linear probe, and the mean of their calibrated scores."""
KEEP_AT = 0.5
"""A tag is kept when its calibrated score reaches this value (its threshold maps here)."""


@dataclass(frozen=True)
class CalibrationConfig:
    """``tagging.index.calibration``: the held-out source images the thresholds are chosen on.

    Args:
        folds: the calibration images are split into this many folds; the probe scoring one fold is trained on
            every other source image, so no image is scored by a probe that saw it.
        max_images: most source images held out for calibration (a seeded sample of the tagged ones); the rest
            only train.
    """

    folds: int = 5
    max_images: int = 20_000

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"tagging.index.calibration.folds must be >= 2, got {self.folds}")
        if self.max_images < 1:
            raise ValueError(f"tagging.index.calibration.max_images must be >= 1, got {self.max_images}")


def assign_folds(image_keys: Sequence[str], folds: int, max_images: int, seed: int) -> np.ndarray:
    """Fold of each image: ``0 … folds-1`` for the calibration images, −1 for the others.

    The keys are sorted before a seeded shuffle, so the split depends on the set of images and the seed, not on
    the order they arrive in; the first ``max_images`` of the shuffle are dealt round-robin into the folds.
    """
    keys = [str(key) for key in image_keys]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    shuffled = np.asarray(order, dtype=np.int64)[np.random.default_rng(seed).permutation(len(keys))]
    fold = np.full(len(keys), -1, dtype=np.int64)
    chosen = shuffled[:max_images]
    fold[chosen] = np.arange(len(chosen)) % folds
    return fold


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> tuple[float | None, float]:
    """The threshold ``t`` whose rule ``score >= t`` has the best F1 on ``scores`` against ``positive``.

    ``t`` lies halfway between the lowest score kept and the next lower score, so a new image scored between
    them is decided by the nearer side; on equal F1 the higher threshold wins (fewer predictions).

    Returns:
        ``(t, f1)``; ``(None, 0.0)`` when there is no positive (the tag is never kept).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    total_positive = int(positive.sum())
    if total_positive == 0:
        return None, 0.0
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(positive[order])
    # only cut where the score changes: tied images are kept or dropped together
    cut = np.flatnonzero(np.r_[ranked[1:] < ranked[:-1], True])
    f1 = 2 * hits[cut] / (cut + 1 + total_positive)
    best = cut[int(np.argmax(f1))]
    lower = ranked[best + 1] if best + 1 < len(ranked) else ranked[best]
    return float((ranked[best] + lower) / 2), float(f1.max())


def pick_thresholds(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tag, :func:`best_f1_threshold` over the images.

    Args:
        scores: ``[images, tags]`` raw scores of one method.
        truth: bool ``[images, tags]``.

    Returns:
        ``(thresholds, f1)``: float ``[tags]`` (NaN: never kept) and the F1 each reaches on these images.
    """
    thresholds = np.full(scores.shape[1], np.nan)
    f1 = np.zeros(scores.shape[1])
    for tag in range(scores.shape[1]):
        threshold, f1[tag] = best_f1_threshold(scores[:, tag], truth[:, tag])
        if threshold is not None:
            thresholds[tag] = threshold
    return thresholds, f1


def calibrate(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Raw scores in [0, 1] → calibrated scores in [0, 1]: piecewise linear per tag, the threshold at
    :data:`KEEP_AT` (0 → 0, threshold → 0.5, 1 → 1); a tag without a threshold scores 0.

    Args:
        scores: ``[n, tags]``.
        thresholds: ``[tags]`` from :func:`pick_thresholds`.
    """
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    t = np.asarray(thresholds, dtype=np.float64)[None, :]
    never = np.isnan(t)
    t = np.where(never, 1.0, t)
    below = KEEP_AT * np.divide(s, t, out=np.zeros_like(s), where=t > 0)
    above = KEEP_AT + (1 - KEEP_AT) * np.divide(s - t, 1 - t, out=np.zeros_like(s), where=t < 1)
    calibrated = np.where(s >= t, above, below)
    return np.where(never, 0.0, calibrated).astype(np.float32)


def method_scores(
    knn: np.ndarray, probe: np.ndarray, thresholds: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Calibrated ``[n, tags]`` scores of every method in :data:`METHODS` from the raw kNN shares and probe
    probabilities (image or crop level alike) and each method's thresholds."""
    calibrated_knn = calibrate(knn, thresholds["knn"])
    calibrated_probe = calibrate(probe, thresholds["probe"])
    both = (calibrated_knn + calibrated_probe) / 2
    return {"knn": calibrated_knn, "probe": calibrated_probe, "both": calibrate(both, thresholds["both"])}


def calibrate_methods(knn: np.ndarray, probe: np.ndarray, truth: np.ndarray) -> dict[str, tuple[np.ndarray,
                                                                                               np.ndarray]]:
    """``{method: (thresholds [tags], f1 [tags])}`` picked on held-out image scores.

    Args:
        knn: ``[images, tags]`` best-crop kNN vote shares (own image excluded).
        probe: ``[images, tags]`` best-crop out-of-fold probe probabilities.
        truth: bool ``[images, tags]``.
    """
    picked = {"knn": pick_thresholds(knn, truth), "probe": pick_thresholds(probe, truth)}
    both = (calibrate(knn, picked["knn"][0]) + calibrate(probe, picked["probe"][0])) / 2
    picked["both"] = pick_thresholds(both, truth)
    return picked


def micro_f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Micro-averaged F1 of bool ``[images, tags]`` predictions."""
    hits = float(np.logical_and(predicted, truth).sum())
    denominator = float(predicted.sum() + truth.sum())
    return 2 * hits / denominator if denominator else 0.0


def thresholds_report(
    tags: Sequence[str],
    picked: Mapping[str, tuple[np.ndarray, np.ndarray]],
    truth: np.ndarray,
    micro: Mapping[str, float],
    **info: Any,
) -> dict[str, Any]:
    """The JSON stored beside the index: ``tags``, ``thresholds`` ``{method: {tag: t | None}}``, the held-out
    ``f1`` per method and tag, the held-out ``micro_f1`` per method, ``positives`` (held-out images per tag) and
    ``info`` (k, images, folds, seed …)."""
    return {
        "tags": list(tags),
        "thresholds": {method: {tag: None if np.isnan(value) else round(float(value), 6)
                                for tag, value in zip(tags, values)} for method, (values, _) in picked.items()},
        "f1": {method: {tag: round(float(value), 4) for tag, value in zip(tags, f1)}
               for method, (_, f1) in picked.items()},
        "micro_f1": {method: round(float(value), 4) for method, value in micro.items()},
        "positives": {tag: int(count) for tag, count in zip(tags, truth.sum(axis=0))},
        **info,
    }


def thresholds_from_report(report: Mapping[str, Any], tags: Sequence[str]) -> dict[str, np.ndarray]:
    """``{method: float [tags]}`` (NaN: never kept) in the order of ``tags``, from :func:`thresholds_report`'s JSON.

    Raises:
        ValueError: the report calibrated other tags than ``tags`` (the index, probe and thresholds come from
            different source collections).
    """
    if list(report["tags"]) != list(tags):
        raise ValueError(f"the vote thresholds cover {len(report['tags'])} tags and the tag probe {len(tags)} "
                         "others; rebuild both from the same source crops with `kedro run --pipeline tagging_index`")
    return {method: np.array([np.nan if report["thresholds"][method][tag] is None
                              else report["thresholds"][method][tag] for tag in tags], dtype=np.float64)
            for method in METHODS}
