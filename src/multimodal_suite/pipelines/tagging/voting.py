"""kNN tag voting: tags of the nearest source crops decide the tags of a target crop, crops decide their image.

Rules (the same for every caller):

- A crop's neighbours are the ``k`` nearest source crops; ids of ``-1`` (FAISS pads with them when the index holds
  fewer than ``k`` vectors) are not neighbours.
- A tag is kept for the crop when at least ``min_votes`` of its neighbours carry it. Its score is the
  similarity-weighted vote share: the summed similarity of the neighbours carrying it over the summed similarity
  of all neighbours (similarities below 0 count as 0, so a far neighbour never takes weight away).
- An image's tags are the union of its crops' tags, each scored by its best crop.
- Ties are broken by tag name, so results never depend on dict or hash order.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence


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

