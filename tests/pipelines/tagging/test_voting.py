import numpy as np
import pytest

from multimodal_suite.pipelines.tagging.voting import (
    image_max,
    knn_crop_scores,
    per_tag_precision_recall,
    tag_matrix,
    tag_precision_recall,
    vote_crop_tags,
    vote_image_tags,
)

ID_TO_TAGS = {0: ["cat", "animal"], 1: ["cat"], 2: ["dog", "animal"], 3: ["red", "circle"], 4: []}


def test_min_votes_and_similarity_weighted_share():
    # neighbours 0, 1, 2 with similarities 0.9, 0.6, 0.3: cat has 2 votes (0.9 + 0.6) of a 1.8 total
    tags = vote_crop_tags([0, 1, 2], [0.9, 0.6, 0.3], ID_TO_TAGS, min_votes=2)
    assert list(tags) == ["cat", "animal"]
    assert tags["cat"] == pytest.approx(1.5 / 1.8)
    assert tags["animal"] == pytest.approx(1.2 / 1.8)
    assert "dog" not in tags  # one vote only
    assert set(vote_crop_tags([0, 1, 2], [0.9, 0.6, 0.3], ID_TO_TAGS, min_votes=1)) == {"cat", "animal", "dog"}


def test_ties_are_broken_by_tag_name():
    tags = vote_crop_tags([3, 3], [0.5, 0.5], ID_TO_TAGS, min_votes=1)
    assert list(tags) == ["circle", "red"] and tags["circle"] == tags["red"] == 1.0


def test_k_larger_than_the_index_ignores_padding_ids():
    # FAISS pads with -1 when the index holds fewer than k vectors
    tags = vote_crop_tags([1, -1, -1, -1], [0.8, -3.4e38, -3.4e38, -3.4e38], ID_TO_TAGS, min_votes=1)
    assert tags == {"cat": 1.0}
    assert vote_crop_tags([-1, -1], [0.0, 0.0], ID_TO_TAGS, min_votes=1) == {}


def test_negative_similarities_carry_no_weight_and_untagged_neighbours_dilute():
    tags = vote_crop_tags([1, 4], [0.5, -0.2], ID_TO_TAGS, min_votes=1)
    assert tags == {"cat": 1.0}
    tags = vote_crop_tags([1, 4], [0.5, 0.5], ID_TO_TAGS, min_votes=1)
    assert tags == {"cat": 0.5}
    with pytest.raises(ValueError):
        vote_crop_tags([1], [1.0], ID_TO_TAGS, min_votes=0)


def test_image_tags_take_the_best_crop():
    image = vote_image_tags([{"cat": 0.4, "animal": 0.4}, {"cat": 0.9}, {}])
    assert image == {"cat": 0.9, "animal": 0.4}
    assert vote_image_tags([]) == {}


def test_precision_recall():
    scores = tag_precision_recall({"a.jpg": ["cat", "red"], "b.jpg": []}, {"a.jpg": ["cat"], "b.jpg": ["dog"]})
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["f1"] == 0.5


def test_array_vote_gives_the_shares_of_the_single_crop_rule_and_the_vote_counts():
    tags = ["animal", "cat", "circle", "dog", "red"]
    labels = tag_matrix(ID_TO_TAGS, tags)
    assert labels.shape == (5, 5) and labels[4].sum() == 0
    ids = np.array([[0, 1, 2], [3, 3, -1], [1, 4, -1]])
    similarities = np.array([[0.9, 0.6, 0.3], [0.5, 0.5, -np.inf], [0.5, 0.5, -np.inf]])
    shares, votes = knn_crop_scores(ids, similarities, labels)
    for row in range(len(ids)):
        expected = vote_crop_tags(ids[row], similarities[row], ID_TO_TAGS, min_votes=1)
        assert {tag: shares[row, j] for j, tag in enumerate(tags) if shares[row, j] > 0} == pytest.approx(expected)
    assert votes[0].tolist() == [2, 2, 0, 1, 0] and votes[1].tolist() == [0, 0, 2, 0, 2]
    assert shares[2, tags.index("cat")] == pytest.approx(0.5)  # the untagged neighbour dilutes


def test_image_max_takes_each_images_best_crop_per_tag():
    crops = np.array([[0.2, 0.9], [0.7, 0.1], [0.4, 0.4]], dtype=np.float32)
    best = image_max(crops, np.array([0, 0, 2]), 3)
    assert np.allclose(best, [[0.7, 0.9], [0.0, 0.0], [0.4, 0.4]])


def test_per_tag_rows_count_support_predictions_and_hits():
    truth = {"a.jpg": ["cat", "red"], "b.jpg": ["cat"], "c.jpg": []}
    predicted = {"a.jpg": ["cat", "dog"], "c.jpg": ["cat"]}
    rows = {row["tag"]: row for row in per_tag_precision_recall(predicted, truth)}
    assert [row["tag"] for row in per_tag_precision_recall(predicted, truth)] == ["cat", "red", "dog"]
    assert rows["cat"] == {"tag": "cat", "support": 2, "predicted": 2, "true_positives": 1, "precision": 0.5,
                           "recall": 0.5, "f1": 0.5}
    assert rows["red"]["recall"] == 0.0 and rows["red"]["predicted"] == 0
    assert rows["dog"]["support"] == 0 and rows["dog"]["precision"] == 0.0
