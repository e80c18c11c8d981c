"""A linear probe per tag over source crop embeddings, trained from image-level tags (multiple-instance).

Source tags belong to images, not crops: a cat photo's crops are all labelled ``cat`` although one of them shows
the cat. The probe is one-vs-rest logistic regression over standardised crop embeddings, fitted in rounds:

1. every crop takes its image's tags;
2. each of ``mil_rounds`` re-fits takes, per tag, only the best-scoring crop of each positive image as the
   positive (the crop that explains the image's tag) and every crop of the negative images as negatives; the
   other crops of positive images are left out for that tag.

An image's probability of a tag is its best crop's (max pooling), as in the kNN vote. Each tag's loss is
balanced between its positives and negatives, so rare tags are not drowned by the negatives; the decision
thresholds are calibrated afterwards (:mod:`.calibration`), not taken at 0.5.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import minimize

from multimodal_suite.common.device import pick_device

from .voting import image_max

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeConfig:
    """``tagging.index.probe``: the linear probe trained beside the index.

    Args:
        mil_rounds: re-fits on the best-scoring crop of every positive image, after the first fit on all crops.
        l2: weight of the squared-norm penalty on each tag's weights (features are standardised).
        max_iter: L-BFGS iterations per fit.
        device: ``auto`` (cuda → mps → cpu) or a torch device string.
    """

    mil_rounds: int = 2
    l2: float = 0.0001
    max_iter: int = 100
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.mil_rounds < 0 or self.max_iter < 1 or self.l2 < 0:
            raise ValueError(f"tagging.index.probe needs mil_rounds >= 0, max_iter >= 1 and l2 >= 0; got {self}")


@dataclass
class LinearProbe:
    """One logistic regression per tag over standardised, L2-normalised crop embeddings.

    Attributes:
        tags: the tags, in column order.
        weight: float32 ``[dim, tags]``.
        bias: float32 ``[tags]``.
        mean: float32 ``[dim]`` feature mean of the training crops.
        scale: float32 ``[dim]`` feature standard deviation of the training crops.
    """

    tags: tuple[str, ...]
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def crop_logits(self, vectors: np.ndarray) -> np.ndarray:
        """``[n, tags]`` logits of crop embeddings ``[n, dim]``."""
        if vectors.shape[1] != len(self.mean):
            raise ValueError(f"crop embeddings are {vectors.shape[1]}-d but the tag probe was trained on "
                             f"{len(self.mean)}-d ones; embed with the tagging.models.clip_model of the source crops")
        return _standardise(vectors, self.mean, self.scale) @ self.weight + self.bias

    def crop_scores(self, vectors: np.ndarray) -> np.ndarray:
        """``[n, tags]`` probabilities of crop embeddings ``[n, dim]``."""
        return _sigmoid(self.crop_logits(vectors)).astype(np.float32)

    def to_dataset(self, config: ProbeConfig, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The ``{"config", "state_dict", "metadata"}`` dict that ``SafetensorsModelDataset`` saves."""
        state = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "scale": self.scale}
        return {"config": {"tags": list(self.tags), "dim": len(self.mean), "probe": asdict(config)},
                "state_dict": {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
                               for name, value in state.items()},
                "metadata": dict(metadata)}

    @classmethod
    def from_dataset(cls, stored: Mapping[str, Any]) -> LinearProbe:
        """The probe from what ``SafetensorsModelDataset`` loads."""
        state = {name: np.asarray(tensor.detach().cpu().numpy(), dtype=np.float32)
                 for name, tensor in stored["state_dict"].items()}
        return cls(tuple(stored["config"]["tags"]), state["weight"], state["bias"], state["mean"], state["scale"])


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def _standardise(vectors: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # embeddings are compared by cosine in the index: the probe sees the same unit vectors
    x = x / np.where(norms > 0, norms, 1.0)
    return (x - mean) / scale


def _fit(x: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
         config: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced, masked, L2-penalised logistic regression of every tag at once, from ``weight, bias``.

    SciPy's L-BFGS drives the parameters; loss and gradient are computed in closed form by torch on ``x``'s
    device (no autograd: each evaluation is two matrix products).
    """
    dim, num_tags = weight.shape
    positives = (targets * mask).sum(0)
    negatives = ((1 - targets) * mask).sum(0)
    # each tag's positives and negatives weigh half of its loss each
    sample_weight = mask * torch.where(targets > 0, 0.5 / positives.clamp(min=1), 0.5 / negatives.clamp(min=1))

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        parameters = torch.from_numpy(theta.astype(np.float32)).to(x.device)
        w, b = parameters[: dim * num_tags].view(dim, num_tags), parameters[dim * num_tags:]
        logits = x @ w + b
        # softplus(z) - y·z is the binary cross-entropy of logit z against target y
        loss = (sample_weight * (torch.nn.functional.softplus(logits) - targets * logits)).sum()
        loss = loss + config.l2 * (w * w).sum()
        residual = sample_weight * (torch.sigmoid(logits) - targets)  # [crops, tags]: d loss / d logits
        gradient = torch.cat([(x.T @ residual + 2 * config.l2 * w).reshape(-1), residual.sum(0)])
        return float(loss), gradient.cpu().double().numpy()

    start = torch.cat([weight.reshape(-1), bias]).cpu().double().numpy()
    result = minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": config.max_iter, "gtol": 1e-6})
    theta = torch.from_numpy(result.x.astype(np.float32)).to(x.device)
    return theta[: dim * num_tags].view(dim, num_tags), theta[dim * num_tags:]


def _best_crops(logits: torch.Tensor, crop_image: torch.Tensor, num_images: int) -> torch.Tensor:
    """bool ``[crops, tags]``: the crop scoring highest for each tag among its image's crops."""
    best = torch.full((num_images, logits.shape[1]), -torch.inf, dtype=logits.dtype, device=logits.device)
    best = best.scatter_reduce(0, crop_image[:, None].expand_as(logits), logits, reduce="amax")
    return logits >= best[crop_image]


def fit_probe(
    vectors: np.ndarray,
    crop_image: np.ndarray,
    labels: np.ndarray,
    tags: Sequence[str],
    config: ProbeConfig = ProbeConfig(),
) -> LinearProbe:
    """Train the probe on crops whose images carry ``labels``.

    Args:
        vectors: float ``[crops, dim]`` crop embeddings.
        crop_image: int ``[crops]`` image number of each crop, in ``[0, images)``.
        labels: bool ``[images, tags]`` the images' tags.
        tags: names of the ``labels`` columns.
        config: rounds, penalty, iterations, device.

    Returns:
        The fitted :class:`LinearProbe`; a tag no image carries gets a bias that scores every crop near 0.
    """
    device = pick_device(config.device)
    raw = np.asarray(vectors, dtype=np.float32)
    unit = _standardise(raw, np.zeros(raw.shape[1], np.float32), np.ones(raw.shape[1], np.float32))
    mean = unit.mean(axis=0)
    scale = unit.std(axis=0) + 1e-6
    x = torch.from_numpy(np.ascontiguousarray((unit - mean) / scale)).to(device)
    images = torch.from_numpy(np.asarray(crop_image, dtype=np.int64)).to(device)
    image_labels = torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(device)
    positive_image = image_labels[images]  # [crops, tags]: the crop's image carries the tag
    weight = torch.zeros((x.shape[1], len(tags)), dtype=torch.float32, device=device)
    bias = torch.zeros(len(tags), dtype=torch.float32, device=device)
    targets, mask = positive_image, torch.ones_like(positive_image)
    for round_number in range(config.mil_rounds + 1):
        weight, bias = _fit(x, targets, mask, weight, bias, config)
        if round_number == config.mil_rounds:
            break
        best = _best_crops(x @ weight + bias, images, len(image_labels)).float()
        targets = positive_image * best
        mask = torch.where(positive_image > 0, best, torch.ones_like(best))
    never = image_labels.sum(0) == 0
    bias = torch.where(never, torch.full_like(bias, -30.0), bias)
    return LinearProbe(tuple(tags), weight.cpu().numpy(), bias.cpu().numpy(), mean.astype(np.float32),
                       scale.astype(np.float32))


def out_of_fold_scores(
    vectors: np.ndarray,
    crop_image: np.ndarray,
    labels: np.ndarray,
    tags: Sequence[str],
    folds: np.ndarray,
    config: ProbeConfig = ProbeConfig(),
) -> np.ndarray:
    """``[images, tags]`` best-crop probabilities of each calibration image from a probe trained without its fold.

    Args:
        vectors, crop_image, labels, tags, config: as for :func:`fit_probe`.
        folds: int ``[images]`` fold of each image (−1: never held out, always trained on).

    Returns:
        float32 ``[images, tags]``; NaN rows for images outside every fold.
    """
    crop_image = np.asarray(crop_image, dtype=np.int64)
    scores = np.full((len(labels), len(tags)), np.nan, dtype=np.float32)
    for fold in np.unique(folds[folds >= 0]):
        held_out = folds == fold
        train_crops = ~held_out[crop_image]
        train_images, renumbered = np.unique(crop_image[train_crops], return_inverse=True)
        probe = fit_probe(vectors[train_crops], renumbered, labels[train_images], tags, config)
        test_crops = np.flatnonzero(held_out[crop_image])
        fold_images, local = np.unique(crop_image[test_crops], return_inverse=True)
        scores[fold_images] = image_max(probe.crop_scores(vectors[test_crops]), local, len(fold_images))
        logger.info("Tag probe fold %d: trained on %d images, scored %d held-out images", int(fold),
                    len(train_images), len(fold_images))
    return scores
