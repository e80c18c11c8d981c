"""Per-tag thresholds chosen on held-out images: the F1-best cut, the calibrated score map, the seeded folds, and
why one min_votes for every tag loses to them when tags are of uneven frequency."""
from __future__ import annotations

import numpy as np
import pytest

from multimodal_suite.pipelines.tagging.calibration import (
    KEEP_AT,
    assign_folds,
    best_f1_threshold,
    calibrate,
    calibrate_methods,
    method_scores,
    micro_f1,
    pick_thresholds,
    thresholds_from_report,
    thresholds_report,
)

K = 10


def vote_shares(seed: int, images: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Best-crop vote shares of a frequent and a rare tag, as image-level source tags make them.

    The frequent tag (60 % of images) is carried by many neighbours of any crop, so negatives get many votes;
    the rare tag (5 %) has few source images, so even its positives get only a few of the ``K`` votes.
    """
    rng = np.random.default_rng(seed)
    truth = np.stack([rng.random(images) < 0.6, rng.random(images) < 0.05], axis=1)
    share = np.where(truth, [0.8, 0.35], [0.45, 0.03])  # chance that a neighbour carries the tag
    votes = rng.binomial(K, share)
    return votes / K, truth


def test_per_tag_thresholds_beat_every_single_min_votes_on_a_frequent_and_a_rare_tag():
    calibration_scores, calibration_truth = vote_shares(seed=0)
    thresholds, _ = pick_thresholds(calibration_scores, calibration_truth)
    frequent, rare = thresholds
    assert frequent > 0.5 > rare  # the frequent tag needs more votes than any one rule, the rare one fewer

    test_scores, test_truth = vote_shares(seed=1)
    calibrated = micro_f1(calibrate(test_scores, thresholds) >= KEEP_AT, test_truth)
    single = {min_votes: micro_f1(test_scores * K >= min_votes, test_truth) for min_votes in range(1, K + 1)}
    assert calibrated > max(single.values())
    rare_f1 = {name: micro_f1(kept[:, 1:], test_truth[:, 1:]) for name, kept in
               {"calibrated": calibrate(test_scores, thresholds) >= KEEP_AT,
                "best single": test_scores * K >= max(single, key=single.get)}.items()}
    assert rare_f1["calibrated"] > rare_f1["best single"]  # the single rule starves the rare tag


def test_best_f1_threshold_cuts_halfway_and_keeps_ties_together():
    threshold, f1 = best_f1_threshold(np.array([0.9, 0.8, 0.3, 0.1]), np.array([True, True, False, False]))
    assert threshold == pytest.approx(0.55) and f1 == 1.0
    # tied images are kept or dropped together: keeping both 0.5s is the best possible
    threshold, f1 = best_f1_threshold(np.array([0.5, 0.5, 0.2]), np.array([True, False, False]))
    assert threshold == pytest.approx(0.35) and f1 == pytest.approx(2 / 3)
    assert best_f1_threshold(np.array([0.4, 0.1]), np.array([False, False])) == (None, 0.0)
    # equal F1: the higher threshold (fewer predictions) wins
    threshold, f1 = best_f1_threshold(np.array([0.9, 0.6, 0.5, 0.4]), np.array([True, False, False, True]))
    assert threshold == pytest.approx(0.75) and f1 == pytest.approx(2 / 3)  # keeping all four is as good


def test_calibrated_scores_put_each_threshold_at_one_half():
    thresholds = np.array([0.2, 0.8, np.nan])
    scores = np.array([[0.0, 0.0, 0.9], [0.2, 0.8, 1.0], [0.1, 0.9, 0.3], [1.0, 1.0, 0.0]])
    calibrated = calibrate(scores, thresholds)
    assert calibrated[0, :2].tolist() == [0.0, 0.0] and calibrated[3, :2].tolist() == [1.0, 1.0]
    assert calibrated[1, :2].tolist() == [0.5, 0.5]
    assert calibrated[2, 0] == pytest.approx(0.25) and calibrated[2, 1] == pytest.approx(0.75)
    assert (calibrated[:, 2] == 0).all()  # no threshold: never kept
    grid = np.linspace(0, 1, 101)[:, None].repeat(2, axis=1)
    mapped = calibrate(grid, thresholds[:2])
    assert (np.diff(mapped, axis=0) >= 0).all()  # monotone: the ranking of images is unchanged
    assert ((mapped >= KEEP_AT) == (grid >= thresholds[:2])).all()


def test_folds_are_seeded_independent_of_order_and_capped():
    keys = [f"shard-{i % 3}/{i:05d}" for i in range(50)]
    folds = assign_folds(keys, 5, 40, seed=0)
    assert (folds == -1).sum() == 10 and np.bincount(folds[folds >= 0]).tolist() == [8] * 5
    reordered = assign_folds(keys[::-1], 5, 40, seed=0)[::-1]
    assert (reordered == folds).all()
    assert (assign_folds(keys, 5, 40, seed=0) == folds).all() and (assign_folds(keys, 5, 40, seed=1) != folds).any()


def test_both_averages_the_calibrated_methods_and_the_report_round_trips():
    rng = np.random.default_rng(3)
    truth = rng.random((200, 3)) < [0.5, 0.2, 0.0]
    knn = np.clip(truth * 0.4 + rng.random((200, 3)) * 0.6, 0, 1)
    probe = np.clip(truth * 0.5 + rng.random((200, 3)) * 0.5, 0, 1)
    picked = calibrate_methods(knn, probe, truth)
    thresholds = {method: values for method, (values, _) in picked.items()}
    scores = method_scores(knn, probe, thresholds)
    mean = (calibrate(knn, thresholds["knn"]) + calibrate(probe, thresholds["probe"])) / 2
    assert np.allclose(scores["both"], calibrate(mean, thresholds["both"]))
    assert np.isnan(thresholds["probe"][2]) and (scores["both"][:, 2] == 0).all()  # a tag no image carries

    tags = ["cat", "red", "unseen"]
    report = thresholds_report(tags, picked, truth, {"knn": 0.5}, k=10)
    assert report["thresholds"]["probe"]["unseen"] is None and report["positives"]["unseen"] == 0
    restored = thresholds_from_report(report, tags)
    assert all(np.allclose(restored[m], thresholds[m], equal_nan=True, atol=1e-6) for m in thresholds)
    with pytest.raises(ValueError, match="tagging_index"):
        thresholds_from_report(report, ["cat", "red"])
