"""Page-stream segmentation metrics against values worked out by hand on small books."""
from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from multimodal_suite.pipelines.pss.metrics import (
    book_strip_figure,
    confusion_matrix_figure,
    document_scores,
    evaluate_books,
    page_scores,
    segment_iou,
    segments,
)

CLASSES = ["advertisement", "cover", "story", "textstory", "first-page", "credits", "art", "text", "back_cover"]


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# segments and IoU
# ---------------------------------------------------------------------------------------------------------------


def test_segments_are_maximal_half_open_runs():
    # 0 0 | 1 1 1 | 0  -> [0,2) [2,5) [5,6); the second run of 0 is its own segment
    assert segments([0, 0, 1, 1, 1, 0]) == [(0, 2), (2, 5), (5, 6)]
    assert segments(np.array([3])) == [(0, 1)]
    assert segments([]) == []


def test_segment_iou():
    assert segment_iou((0, 4), (2, 6)) == pytest.approx(1 / 3)  # inter 2, union 4 + 4 - 2 = 6
    assert segment_iou((0, 2), (0, 4)) == 0.5  # inter 2, union 4
    assert segment_iou((0, 2), (2, 4)) == 0.0  # touching, no shared page
    assert segment_iou((1, 5), (1, 5)) == 1.0
    assert segment_iou((0, 0), (0, 0)) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# document level, one book
# ---------------------------------------------------------------------------------------------------------------


def test_perfect_prediction():
    # cover | story story | first-page | story | ad -> 5 segments, each matched with IoU 1
    true = [1, 2, 2, 4, 2, 0]
    scores = document_scores(true, true)
    for key in ("precision", "recall", "f1", "sq", "pq"):
        assert scores[key] == 1.0
    assert scores["mndd_cosmo"] == 0
    assert scores["mndd_one_to_one"] == 0
    assert scores["pages"] == 6
    assert scores["n_true_segments"] == scores["n_pred_segments"] == 5


def test_labels_do_not_matter_only_boundaries():
    # the same boundaries with other class labels is still a perfect segmentation
    scores = document_scores([1, 2, 2, 0], [5, 7, 7, 3])
    assert scores["f1"] == 1.0 and scores["mndd_one_to_one"] == 0


def test_whole_book_prediction_zeroes_mndd_cosmo_but_not_mndd_one_to_one():
    # true  story×4 | ad      -> T1 = [0,4), T2 = [4,5)
    # pred  story×5           -> P  = [0,5)
    # IoU(T1,P) = 4/5 = 0.8 > 0.5 (match), IoU(T2,P) = 1/5
    # precision = 1/1, recall = 1/2, F1 = 2·1·0.5/1.5 = 2/3, SQ = 0.8, PQ = 2/3 · 0.8 = 8/15
    # mndd_cosmo = 5 − (4 + 1) = 0: P is the best overlap of both T1 and T2
    # mndd_one_to_one = 5 − 4 = 1: P can only be assigned to one of them, the ad page has to move
    scores = document_scores([2, 2, 2, 2, 0], [2, 2, 2, 2, 2])
    assert scores["precision"] == 1.0
    assert scores["recall"] == 0.5
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["sq"] == pytest.approx(0.8)
    assert scores["pq"] == pytest.approx(8 / 15)
    assert scores["mndd_cosmo"] == 0
    assert scores["mndd_one_to_one"] == 1
    assert (scores["n_true_segments"], scores["n_pred_segments"]) == (2, 1)


def test_whole_book_prediction_with_no_match():
    # true  cover | story×3 | ad×2 -> [0,1) [1,4) [4,6); pred one segment [0,6)
    # IoUs 1/6, 3/6 = 0.5 (not > 0.5), 2/6 -> no match: every fraction is 0
    # mndd_cosmo = 6 − (1 + 3 + 2) = 0; mndd_one_to_one = 6 − 3 = 3 (only the story keeps its pages)
    scores = document_scores([1, 2, 2, 2, 0, 0], [2] * 6)
    for key in ("precision", "recall", "f1", "sq", "pq"):
        assert scores[key] == 0.0
    assert scores["mndd_cosmo"] == 0
    assert scores["mndd_one_to_one"] == 3


def test_iou_exactly_half_does_not_match():
    # true [0,4); pred [0,2) [2,4): both IoUs are 2/4 = 0.5 exactly -> no match
    scores = document_scores([2, 2, 2, 2], [2, 2, 0, 0])
    assert scores["precision"] == 0.0 and scores["recall"] == 0.0 and scores["pq"] == 0.0
    # mndd_cosmo = 4 − 2 = 2; mndd_one_to_one: one true segment takes one predicted one, 4 − 2 = 2
    assert scores["mndd_cosmo"] == 2 and scores["mndd_one_to_one"] == 2


def test_iou_half_next_to_a_match():
    # true  [0,2) [2,4)        pred  [0,1) [1,4)
    # IoU(T1,P1) = 1/2 = 0.5 (no), IoU(T1,P2) = 1/4, IoU(T2,P2) = 2/3 (match)
    # precision = 1/2, recall = 1/2, F1 = 1/2, SQ = 2/3, PQ = 1/3
    # overlaps [[1, 1], [0, 2]]: mndd_cosmo = 4 − (1 + 2) = 1; assignment T1–P1, T2–P2 = 3 -> mndd_one_to_one = 1
    scores = document_scores([0, 0, 1, 1], [0, 1, 1, 1])
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["f1"] == 0.5
    assert scores["sq"] == pytest.approx(2 / 3)
    assert scores["pq"] == pytest.approx(1 / 3)
    assert scores["mndd_cosmo"] == 1 and scores["mndd_one_to_one"] == 1


def test_unlabelled_pages_are_dropped_before_segmentation():
    # true  story −1 story ad −1 ad   pred  story text story ad story ad
    # after dropping positions 1 and 4: true story story ad ad, pred story story ad ad -> perfect
    # (kept, the −1 pages would split each true run in two and the prediction would score below 1)
    scores = document_scores([2, -1, 2, 0, -1, 0], [2, 7, 2, 0, 2, 0])
    assert scores["pages"] == 4
    assert scores["n_true_segments"] == scores["n_pred_segments"] == 2
    assert scores["f1"] == 1.0 and scores["pq"] == 1.0 and scores["mndd_one_to_one"] == 0


def test_greedy_overlap_and_one_to_one_assignment_differ():
    # true  T1 = [0,5) T2 = [5,7)      pred  P1 = [0,2) P2 = [2,7)
    # overlaps  T1: P1 2, P2 3          T2: P1 0, P2 2
    # mndd_cosmo (largest overlap per true segment, P2 reused) = 7 − (3 + 2) = 2
    # greedy one-to-one (take the largest pair first): T1–P2 = 3, then T2 has only P2 left -> 7 − 3 = 4
    # optimal one-to-one: T1–P1 + T2–P2 = 2 + 2 = 4 -> mndd_one_to_one = 7 − 4 = 3
    # IoUs 2/5, 3/7, 2/5 -> no match
    scores = document_scores([0] * 5 + [1] * 2, [3] * 2 + [4] * 5)
    assert scores["mndd_cosmo"] == 2
    assert scores["mndd_one_to_one"] == 3
    assert scores["f1"] == 0.0


def _brute_force_mndd_one_to_one(true: list[int], pred: list[int]) -> int:
    t, p = segments(true), segments(pred)
    overlap = [[max(0, min(a[1], b[1]) - max(a[0], b[0])) for b in p] for a in t]
    # try every injective map from the shorter side to the longer one
    if len(t) <= len(p):
        pairings = ([(i, j) for i, j in enumerate(cols)] for cols in itertools.permutations(range(len(p)), len(t)))
    else:
        pairings = ([(i, j) for j, i in enumerate(rows)] for rows in itertools.permutations(range(len(t)), len(p)))
    best = max(sum(overlap[i][j] for i, j in pairing) for pairing in pairings)
    return len(true) - best


def test_mndd_one_to_one_is_the_optimum_over_all_one_to_one_assignments():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pages = int(rng.integers(1, 9))
        true = rng.integers(0, 3, pages).tolist()
        pred = rng.integers(0, 3, pages).tolist()
        scores = document_scores(true, pred)
        assert scores["mndd_one_to_one"] == _brute_force_mndd_one_to_one(true, pred)
        assert 0 <= scores["mndd_cosmo"] <= scores["mndd_one_to_one"] < pages


def test_empty_book():
    # no labelled page: nothing to segment, nothing to move, fractions undefined
    for true, pred in (([-1, -1], [2, 2]), ([], [])):
        scores = document_scores(true, pred)
        assert scores["pages"] == 0
        assert scores["n_true_segments"] == scores["n_pred_segments"] == 0
        assert scores["mndd_cosmo"] == 0 and scores["mndd_one_to_one"] == 0
        for key in ("precision", "recall", "f1", "sq", "pq"):
            assert math.isnan(scores[key])


def test_length_mismatch_names_the_book():
    with pytest.raises(ValueError, match="book b7: true labels cover 3 pages but predictions cover 2"):
        evaluate_books({"b7": (np.array([0, 0, 1]), np.array([0, 0]))}, CLASSES)


def test_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match="missing"):
        document_scores([0, 1], [0.0, float("nan")])


# ---------------------------------------------------------------------------------------------------------------
# page level
# ---------------------------------------------------------------------------------------------------------------


def test_macro_f1_over_present_classes_vs_all_nine():
    # true ad ad story story, pred ad story story story
    # ad:    tp 1, fp 0, fn 1 -> P 1,   R 1/2, F1 2/3
    # story: tp 2, fp 1, fn 0 -> P 2/3, R 1,   F1 0.8
    # macro_f1 = (2/3 + 0.8) / 2 = 11/15; macro_f1_all9 = (2/3 + 0.8) / 9 = 22/135; accuracy 3/4
    scores, table = page_scores(np.array([0, 0, 2, 2]), np.array([0, 2, 2, 2]), CLASSES)
    assert scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx(11 / 15)
    assert scores["macro_f1_all9"] == pytest.approx(22 / 135)
    assert scores["pages_evaluated"] == 4
    assert list(table.columns) == ["class", "label", "precision", "recall", "f1", "support"]
    assert table["class"].tolist() == CLASSES
    ad, story = table.iloc[0], table.iloc[2]
    assert (ad.precision, ad.recall, ad.support) == (1.0, 0.5, 2)
    assert ad.f1 == pytest.approx(2 / 3)
    assert story.precision == pytest.approx(2 / 3) and story.recall == 1.0 and story.f1 == pytest.approx(0.8)
    assert table.loc[[1, 3, 4, 5, 6, 7, 8], ["precision", "recall", "f1", "support"]].to_numpy().sum() == 0


def test_macro_f1_counts_a_class_present_only_in_predictions():
    # true ad ad, pred ad cover: ad F1 = 2·1·(1/2)/(3/2) = 2/3, cover F1 = 0 (predicted, never true)
    # macro_f1 = (2/3 + 0) / 2 = 1/3; macro_f1_all9 = (2/3) / 9 = 2/27
    scores, _ = page_scores(np.array([0, 0]), np.array([0, 1]), CLASSES)
    assert scores["macro_f1"] == pytest.approx(1 / 3)
    assert scores["macro_f1_all9"] == pytest.approx(2 / 27)


def test_page_scores_drop_unlabelled_pages():
    # the −1 page's prediction (wrong or not) is not counted: 2/2 correct
    scores, table = page_scores(np.array([2, -1, 0]), np.array([2, 0, 0]), CLASSES)
    assert scores["accuracy"] == 1.0 and scores["pages_evaluated"] == 2
    assert table["support"].sum() == 2


def test_page_scores_reject_predictions_outside_the_classes():
    with pytest.raises(ValueError, match="outside 0..8"):
        page_scores(np.array([0, 1]), np.array([0, -1]), CLASSES)


# ---------------------------------------------------------------------------------------------------------------
# several books
# ---------------------------------------------------------------------------------------------------------------


def test_document_metrics_average_over_books_page_metrics_pool():
    books = {
        # A: one segment [0,6), predicted exactly -> P = R = F1 = SQ = PQ = 1, mndd_one_to_one 0
        "A": (np.array([0] * 6), np.array([0] * 6)),
        # B: true ad cover ad cover -> 4 one-page segments; pred one segment [0,4), every IoU 1/4 -> no match
        #    P = R = F1 = SQ = PQ = 0; mndd_cosmo = 4 − 4·1 = 0; mndd_one_to_one = 4 − 1 = 3, normalised 3/4
        "B": (np.array([0, 1, 0, 1]), np.array([0, 0, 0, 0])),
        # C: no labelled page -> skipped from the document averages
        "C": (np.array([-1, -1, -1]), np.array([0, 0, 0])),
    }
    summary, per_class, per_book = evaluate_books(books, CLASSES)

    # mean over A and B; pooling the segments instead would give precision 1/2 but recall 1/5
    assert summary["doc_precision"] == 0.5
    assert summary["doc_recall"] == 0.5
    assert summary["doc_f1"] == 0.5
    assert summary["sq"] == 0.5
    assert summary["pq"] == 0.5
    assert summary["mndd_cosmo"] == 0.0
    assert summary["mndd_one_to_one"] == 1.5  # (0 + 3) / 2
    assert summary["mndd_cosmo_norm"] == 0.0
    assert summary["mndd_one_to_one_norm"] == 0.375  # (0/6 + 3/4) / 2; pooled would be 3/10
    assert summary["books_evaluated"] == 2
    assert summary["pages_evaluated"] == 10

    # pages pooled: A 6/6 + B 2/4 correct = 8/10 (the mean of book accuracies would be 0.75)
    # ad: true 8, predicted 10, tp 8 -> P 0.8, R 1, F1 8/9; cover: tp 0 -> F1 0
    assert summary["accuracy"] == 0.8
    assert summary["macro_f1"] == pytest.approx(4 / 9)  # (8/9 + 0) / 2
    assert summary["macro_f1_all9"] == pytest.approx(8 / 81)  # (8/9) / 9
    assert per_class.loc[0, "precision"] == pytest.approx(0.8) and per_class.loc[0, "support"] == 8

    assert list(summary) == [
        "accuracy", "macro_f1", "macro_f1_all9", "doc_precision", "doc_recall", "doc_f1", "sq", "pq",
        "mndd_cosmo", "mndd_one_to_one", "mndd_cosmo_norm", "mndd_one_to_one_norm", "books_evaluated",
        "pages_evaluated",
    ]  # fmt: skip
    assert per_book["book"].tolist() == ["A", "B", "C"]
    b = per_book.set_index("book").loc["B"]
    assert (b.pages, b.n_true_segments, b.n_pred_segments) == (4, 4, 1)
    assert (b.mndd_one_to_one, b.mndd_one_to_one_norm) == (3, 0.75)
    assert b.accuracy == 0.5
    c = per_book.set_index("book").loc["C"]
    assert c.pages == 0 and c.pages_ignored == 3 and math.isnan(c.f1) and math.isnan(c.mndd_one_to_one_norm)


def test_no_evaluable_book_gives_nan_document_metrics():
    summary, per_class, per_book = evaluate_books({"C": (np.array([-1]), np.array([0]))}, CLASSES)
    assert summary["books_evaluated"] == 0 and summary["pages_evaluated"] == 0
    assert math.isnan(summary["doc_f1"]) and math.isnan(summary["accuracy"])
    assert per_class["support"].sum() == 0 and len(per_book) == 1


# ---------------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------------


def test_confusion_matrix_figure_is_row_normalised_with_counts():
    true = np.array([0, 0, 0, 2, 2, -1])
    pred = np.array([0, 0, 2, 2, 2, 5])
    fig = confusion_matrix_figure(true, pred, CLASSES, "test pages")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # matrix + colour bar
    ax = fig.axes[0]
    assert ax.get_title() == "test pages"
    fractions = np.asarray(ax.images[0].get_array())
    # row ad: 2 of 3 predicted ad, 1 story; row story: 2 of 2; the −1 page is not counted
    assert fractions[0, 0] == pytest.approx(2 / 3) and fractions[0, 2] == pytest.approx(1 / 3)
    assert fractions[2, 2] == 1.0
    assert fractions[1].sum() == 0.0  # no true cover page
    assert len(ax.texts) == 81
    assert sorted(int(t.get_text()) for t in ax.texts if t.get_text() != "0") == [1, 2, 2]
    assert _png_bytes(fig).startswith(b"\x89PNG")


def test_book_strip_figure_one_axes_per_book_with_legend():
    books = {
        "b1": (np.array([1, 2, 2, -1, 0]), np.array([1, 2, 2, 2, 0])),
        "b2": (np.array([4, 2, 8]), np.array([4, 4, 8])),
        "b3": (np.array([0]), np.array([0])),
    }
    fig = book_strip_figure(books, CLASSES, max_books=2)
    assert len(fig.axes) == 2
    cells = np.asarray(fig.axes[0].images[0].get_array())
    assert cells.shape == (2, 5, 3)  # true row above predicted row, one cell per page
    assert np.allclose(cells[0, 3], cells[0, 3].mean())  # the −1 page is grey
    assert not np.allclose(cells[1, 3], cells[1, 3].mean())  # its prediction (story) is not
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == [*CLASSES, "unlabelled"]
    assert _png_bytes(fig).startswith(b"\x89PNG")


def test_book_strip_figure_without_books_or_pages():
    assert _png_bytes(book_strip_figure({}, CLASSES)).startswith(b"\x89PNG")
    fig = book_strip_figure({"empty": (np.array([], dtype=int), np.array([], dtype=int))}, CLASSES)
    assert len(fig.axes) == 1
    assert _png_bytes(fig).startswith(b"\x89PNG")
