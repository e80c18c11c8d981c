"""kNN tag voting: tags of the nearest source crops decide the tags of a target crop, crops decide their image.

Rules (the same for every caller):

- A crop's neighbours are the ``k`` nearest source crops; ids of ``-1`` (FAISS pads with them when the index holds
  fewer than ``k`` vectors) are not neighbours.
- A tag is kept for the crop when at least ``min_votes`` of its neighbours carry it. Its score is the
  similarity-weighted vote share: the summed similarity of the neighbours carrying it over the summed similarity
  of all neighbours (similarities below 0 count as 0, so a far neighbour never takes weight away).
- An image's tags are the union of its crops' tags, each scored by its best crop.
- Ties are broken by tag name, so results never depend on dict or hash order.

:func:`vote_crop_tags` applies the rule to one crop; :func:`knn_crop_scores` gives the same shares (and vote
counts) for many crops and every tag at once, as arrays, for the calibrated methods of
:mod:`.calibration`. :func:`per_tag_precision_recall` scores predictions tag by tag.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import sparse


def vote_crop_tags(
    neighbour_ids: Sequence[int],
    similarities: Sequence[float],
    id_to_tags: Mapping[int, Sequence[str]],
    min_votes: int,
) -> dict[str, float]:
    """Tags of one crop with their scores, from its neighbours.

    Args:
        neighbour_ids: [k] source ids of the nearest neighbours (−1 = no neighbour).
        similarities: [k] inner-product similarities, aligned with ``neighbour_ids``.
        id_to_tags: source id → tags of the source sample the neighbour crop came from.
        min_votes: neighbours that must carry a tag for it to be kept.

    Returns:
        ``{tag: score}`` with scores in [0, 1], sorted by score descending then tag name.
    """
    if min_votes < 1:
        raise ValueError(f"min_votes must be >= 1, got {min_votes}")
    votes: dict[str, int] = defaultdict(int)
    weight: dict[str, float] = defaultdict(float)
    total = 0.0
    for neighbour, similarity in zip(neighbour_ids, similarities):
        neighbour = int(neighbour)
        if neighbour < 0:
            continue
        w = max(float(similarity), 0.0)
        total += w
        for tag in set(id_to_tags.get(neighbour, ())):
            votes[tag] += 1
            weight[tag] += w
    kept = {tag: (weight[tag] / total if total > 0 else 0.0) for tag, count in votes.items() if count >= min_votes}
    return dict(sorted(kept.items(), key=lambda item: (-item[1], item[0])))


def vote_image_tags(crop_tags: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Union of the crops' tags, each with its best crop's score; sorted by score then name."""
    best: dict[str, float] = {}
    for tags in crop_tags:
        for tag, score in tags.items():
            best[tag] = max(best.get(tag, 0.0), score)
    return dict(sorted(best.items(), key=lambda item: (-item[1], item[0])))


def tag_precision_recall(
    predicted: Mapping[str, Sequence[str]], truth: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Micro-averaged tag precision/recall/F1 over images present in ``truth`` (missing predictions = no tags)."""
    true_positive = predicted_count = true_count = 0
    for image, true_tags in truth.items():
        predicted_tags = set(predicted.get(image, ()))
        true_set = set(true_tags)
        true_positive += len(predicted_tags & true_set)
        predicted_count += len(predicted_tags)
        true_count += len(true_set)
    precision = true_positive / predicted_count if predicted_count else 0.0
    recall = true_positive / true_count if true_count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "images": float(len(truth))}



def tag_matrix(id_to_tags: Mapping[int, Sequence[str]], tags: Sequence[str]) -> sparse.csr_matrix:
    """``[max id + 1, tags]`` 0/1 matrix: row ``id`` marks the tags its source sample carries (tags outside
    ``tags`` are left out; ids not in ``id_to_tags`` carry none)."""
    column = {tag: position for position, tag in enumerate(tags)}
    rows, cols = [], []
    for source_id, source_tags in id_to_tags.items():
        for tag in set(source_tags):
            if tag in column:
                rows.append(int(source_id))
                cols.append(column[tag])
    size = max((int(i) for i in id_to_tags), default=-1) + 1
    return sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(size, len(tags)))


def knn_crop_scores(
    neighbour_ids: np.ndarray, similarities: np.ndarray, labels: sparse.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """The vote of :func:`vote_crop_tags` for many crops and every tag, before any ``min_votes`` cut.

    Args:
        neighbour_ids: int ``[q, k]`` source ids (−1 = no neighbour).
        similarities: float ``[q, k]``, aligned with ``neighbour_ids``.
        labels: ``[ids, tags]`` from :func:`tag_matrix`.

    Returns:
        ``(shares, votes)``: float32 ``[q, tags]`` similarity-weighted vote shares in [0, 1], and int32 ``[q, tags]``
        neighbours carrying each tag.
    """
    ids = np.asarray(neighbour_ids, dtype=np.int64)
    q, k = ids.shape
    valid = (ids >= 0) & (ids < labels.shape[0])
    weights = np.where(valid, np.clip(np.nan_to_num(np.asarray(similarities, np.float64), neginf=0.0), 0.0, None),
                       0.0)
    rows = np.repeat(np.arange(q), k)[valid.ravel()]
    cols = ids.ravel()[valid.ravel()]
    # duplicate (crop, neighbour) pairs are summed, as repeated neighbours vote again in vote_crop_tags
    weighted = sparse.csr_matrix((weights.ravel()[valid.ravel()], (rows, cols)), shape=(q, labels.shape[0]))
    counted = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(q, labels.shape[0]))
    total = weights.sum(axis=1)
    shares = np.asarray((weighted @ labels).todense(), dtype=np.float64)
    shares = np.divide(shares, total[:, None], out=np.zeros_like(shares), where=total[:, None] > 0)
    votes = np.asarray((counted @ labels).todense()).astype(np.int32)
    return shares.astype(np.float32), votes


def image_max(crop_scores: np.ndarray, crop_image: np.ndarray, num_images: int) -> np.ndarray:
    """``[num_images, tags]``: each image's best crop score per tag (0 for an image without crops).

    Args:
        crop_scores: ``[crops, tags]``.
        crop_image: int ``[crops]`` image number of each crop, in ``[0, num_images)``.
        num_images: images.
    """
    scores = np.asarray(crop_scores)
    best = np.full((num_images, scores.shape[1]), -np.inf, dtype=np.float64)
    np.maximum.at(best, np.asarray(crop_image, dtype=np.int64), scores)
    best[np.isneginf(best)] = 0.0
    return best.astype(scores.dtype if scores.dtype.kind == "f" else np.float32)


def per_tag_precision_recall(
    predicted: Mapping[str, Sequence[str]], truth: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """One row per tag that is true or predicted on the images of ``truth``: ``tag``, ``support`` (images that
    carry it), ``predicted`` (images it was predicted for), ``true_positives``, ``precision``, ``recall``, ``f1``;
    sorted by support descending, then tag. A tag never predicted has precision 0, one never true recall 0."""
    support: dict[str, int] = defaultdict(int)
    predicted_count: dict[str, int] = defaultdict(int)
    hits: dict[str, int] = defaultdict(int)
    for image, true_tags in truth.items():
        true_set, predicted_set = set(true_tags), set(predicted.get(image, ()))
        for tag in true_set:
            support[tag] += 1
        for tag in predicted_set:
            predicted_count[tag] += 1
        for tag in true_set & predicted_set:
            hits[tag] += 1
    rows = []
    for tag in sorted(set(support) | set(predicted_count), key=lambda name: (-support[name], name)):
        precision = hits[tag] / predicted_count[tag] if predicted_count[tag] else 0.0
        recall = hits[tag] / support[tag] if support[tag] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"tag": tag, "support": support[tag], "predicted": predicted_count[tag],
                     "true_positives": hits[tag], "precision": precision, "recall": recall, "f1": f1})
    return rows
