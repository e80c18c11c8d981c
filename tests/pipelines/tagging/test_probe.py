"""The linear probe: multiple-instance training finds the crop that carries an image-level tag, the probe
survives its dataset, and out-of-fold scores never come from a probe that saw the image."""
from __future__ import annotations

import numpy as np
import pytest

from multimodal_suite.datasets import SafetensorsModelDataset
from multimodal_suite.pipelines.tagging.probe import (
    LinearProbe,
    ProbeConfig,
    fit_probe,
    out_of_fold_scores,
)
from multimodal_suite.pipelines.tagging.voting import image_max

DIM, CROPS = 16, 4
CAT, RED = np.eye(DIM)[0], np.eye(DIM)[1]  # the object the tag names, and one that often shares its images
CONFIG = ProbeConfig(device="cpu")


def collection(seed: int, images: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images of ``CROPS`` crops; ``cat`` images have one cat crop, and a red crop in 80 % of them (20 % of the
    others): the image-level tag is true of every crop of a cat image, but explained by one.

    Returns:
        ``(vectors [images*CROPS, DIM], crop_image, labels [images, 1], kind [crops]: 0 noise, 1 cat, 2 red)``.
    """
    rng = np.random.default_rng(seed)
    cat = rng.random(images) < 0.4
    red = rng.random(images) < np.where(cat, 0.8, 0.2)
    kind = np.zeros((images, CROPS), dtype=np.int64)
    kind[cat, 0] = 1
    kind[red, 1] = 2
    vectors = rng.normal(scale=0.2, size=(images, CROPS, DIM))
    vectors += (kind == 1)[..., None] * CAT + (kind == 2)[..., None] * RED
    return (vectors.reshape(-1, DIM).astype(np.float32), np.repeat(np.arange(images), CROPS), cat[:, None],
            kind.ravel())


@pytest.fixture(scope="module")
def trained() -> dict[int, LinearProbe]:
    vectors, crop_image, labels, _ = collection(seed=0)
    return {rounds: fit_probe(vectors, crop_image, labels, ["cat"], ProbeConfig(mil_rounds=rounds, device="cpu"))
            for rounds in (0, 2)}


def test_multiple_instance_training_finds_the_crop_that_carries_the_tag(trained):
    vectors, crop_image, labels, kind = collection(seed=1)

    def image_auc(probe: LinearProbe) -> float:
        images = image_max(probe.crop_scores(vectors), crop_image, len(labels))[:, 0]
        return float((images[labels[:, 0]][:, None] > images[~labels[:, 0]][None, :]).mean())

    assert image_auc(trained[2]) > max(image_auc(trained[0]), 0.98)
    crop_scores = trained[2].crop_scores(vectors)[:, 0]
    best_kind = kind.reshape(-1, CROPS)[np.arange(len(labels)), crop_scores.reshape(-1, CROPS).argmax(axis=1)]
    assert (best_kind[labels[:, 0]] == 1).mean() > 0.95  # a cat image's best crop is its cat
    # the red crops ride along with the cats in the image-level labels; the re-fits stop crediting them
    red = kind == 2
    first_fit = trained[0].crop_scores(vectors)[red, 0].mean()
    assert crop_scores[red].mean() < first_fit and crop_scores[red].mean() < 0.5


def test_probe_round_trips_through_its_dataset(trained, tmp_path):
    probe = trained[2]
    dataset = SafetensorsModelDataset(filepath=str(tmp_path / "tag_probe"), producer_pipeline="tagging_index")
    dataset.save(probe.to_dataset(CONFIG, {"images": 160}))
    restored = LinearProbe.from_dataset(dataset.load())
    vectors = collection(seed=2, images=10)[0]
    assert restored.tags == ("cat",)
    assert np.allclose(restored.crop_scores(vectors), probe.crop_scores(vectors), atol=1e-6)
    with pytest.raises(ValueError, match="8-d.*16-d"):
        restored.crop_scores(vectors[:, :8])


def test_out_of_fold_scores_come_from_probes_that_never_saw_the_image():
    vectors, crop_image, labels, _ = collection(seed=3, images=120)
    # a tag only image 5 carries: a probe trained without image 5 has never seen it
    only_five = np.zeros((120, 1), dtype=bool)
    only_five[5] = True
    labels = np.concatenate([labels, only_five], axis=1)
    vectors[crop_image == 5] += 3 * np.eye(DIM)[2]
    folds = np.where(np.arange(120) < 100, np.arange(120) % 2, -1)
    scores = out_of_fold_scores(vectors, crop_image, labels, ["cat", "rare"], folds, CONFIG)
    assert np.isnan(scores[100:]).all() and not np.isnan(scores[:100]).any()
    assert scores[5, 1] < 1e-6
    in_sample = image_max(fit_probe(vectors, crop_image, labels, ["cat", "rare"], CONFIG).crop_scores(vectors),
                          crop_image, 120)
    assert in_sample[5, 1] > 0.9
    cat = labels[:100, 0]  # and the held-out scores still rank cat images first
    assert (scores[:100, 0][cat][:, None] > scores[:100, 0][~cat][None, :]).mean() > 0.85
