"""Page-stream segmentation metrics with the meaning of the published CoSMo figures, and two diagnostic figures.

A book is a pair of per-page label sequences ``(true, pred)`` of equal length. Labels are class indices
``0..len(class_names)-1``; :data:`IGNORE_LABEL` (−1) in ``true`` marks an unlabelled page, and every metric drops
those positions from *both* sequences before doing anything else (so runs on either side of an ignored page
join into one segment).

Two levels:

* **page level** — pooled over all pages of all books: accuracy, ``macro_f1`` (mean F1 over the classes present
  in ``true`` or ``pred``, scikit-learn's default), ``macro_f1_all9`` (mean F1 over every class, absent ones
  counting 0) and a per-class precision/recall/F1/support table;
* **document level** — computed per book, then averaged over books. Segments are maximal runs of equal labels,
  class-agnostic: only where the boundaries fall counts. A predicted and a true segment match when their IoU
  (in pages) is strictly above 0.5, which makes matches one-to-one. Precision = matches / predicted segments,
  recall = matches / true segments, SQ = mean IoU of the matched pairs (0 when none), PQ = F1 × SQ.

MnDD (minimum number of pages to move so that the predicted split equals the true one) comes in two forms:

* ``mndd_cosmo`` = pages − Σ over true segments of its largest overlap with any predicted segment. A predicted
  segment may serve several true segments, so predicting the whole book as one segment scores 0;
* ``mndd_one_to_one`` = pages − the largest total overlap of a one-to-one assignment of true to predicted
  segments (the TABME definition), which is the true minimum.

Published comic PSS figures are ``mndd_cosmo``; the other keeps its suffix so that it is never read as one.

Both are reported in pages per book and divided by the book's length (``*_norm``), then averaged over books.
A book with no labelled pages is skipped from every document-level average and counted out of
``books_evaluated``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from multimodal_suite.common.comics.annotations import IGNORE_LABEL

# tab10 without its grey, so that grey is left for unlabelled pages
CLASS_COLOURS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
)  # fmt: skip
IGNORE_COLOUR = "#c7c7c7"

DOCUMENT_KEYS: tuple[str, ...] = ("precision", "recall", "f1", "sq", "pq", "mndd_cosmo", "mndd_one_to_one")
BOOK_COLUMNS: list[str] = [
    "book", "pages", "pages_ignored", "n_true_segments", "n_pred_segments", "accuracy",
    "precision", "recall", "f1", "sq", "pq", "mndd_cosmo", "mndd_one_to_one", "mndd_cosmo_norm", "mndd_one_to_one_norm",
]  # fmt: skip
CLASS_COLUMNS: list[str] = ["class", "label", "precision", "recall", "f1", "support"]


# ---------------------------------------------------------------------------------------------------------------
# segments
# ---------------------------------------------------------------------------------------------------------------


def segments(labels: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of equal labels.

    Args:
        labels: Per-page labels ``[pages]``.

    Returns:
        Half-open page intervals ``[(start, end), ...]`` in page order, covering ``0..pages``; ``[]`` for an
        empty sequence.
    """
    values = np.asarray(labels)
    if values.size == 0:
        return []
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    bounds = [0, *cuts.tolist(), int(values.size)]
    return list(zip(bounds[:-1], bounds[1:]))


def segment_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Intersection over union of two half-open page intervals (0.0 when both are empty)."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _overlaps(true_segments: list[tuple[int, int]], pred_segments: list[tuple[int, int]]) -> np.ndarray:
    """Pages shared by each true and each predicted segment, int64 ``[n_true, n_pred]``."""
    t = np.asarray(true_segments, dtype=np.int64).reshape(-1, 2)
    p = np.asarray(pred_segments, dtype=np.int64).reshape(-1, 2)
    inter = np.minimum(t[:, None, 1], p[None, :, 1]) - np.maximum(t[:, None, 0], p[None, :, 0])
    return np.clip(inter, 0, None)


# ---------------------------------------------------------------------------------------------------------------
# document level
# ---------------------------------------------------------------------------------------------------------------


def _as_labels(values: Sequence[int], book: str, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 array; a missing value (NaN, e.g. from a reindex) is an error, not a label."""
    array = np.asarray(values).reshape(-1)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(
            f"{book}: {what} are missing (NaN) on {int((~np.isfinite(array)).sum())} pages; "
            "give every page a class index (or -1 for an unlabelled true page)"
        )
    return array.astype(np.int64)


def _labelled(true: Sequence[int], pred: Sequence[int], book: str = "book") -> tuple[np.ndarray, np.ndarray]:
    """``(true, pred)`` as 1-D int arrays with the positions where ``true`` is :data:`IGNORE_LABEL` removed."""
    t, p = _as_labels(true, book, "true labels"), _as_labels(pred, book, "predictions")
    if t.shape != p.shape:
        raise ValueError(
            f"{book}: true labels cover {t.size} pages but predictions cover {p.size}; "
            "pass one prediction per page of the book"
        )
    keep = t != IGNORE_LABEL
    return t[keep], p[keep]


def document_scores(true: Sequence[int], pred: Sequence[int]) -> dict[str, float]:
    """Segmentation scores of one book.

    Positions where ``true`` is −1 are removed from both sequences first; ``pred`` values are only compared with
    their neighbours, so any ints will do.

    Args:
        true: True labels ``[pages]``, −1 for unlabelled pages.
        pred: Predicted labels ``[pages]``.

    Returns:
        ``precision, recall, f1, sq, pq`` (fractions), ``mndd_cosmo, mndd_one_to_one`` (pages), ``pages``
        (labelled pages), ``n_true_segments, n_pred_segments``. A book with no labelled pages has ``pages = 0``,
        no segments, ``mndd_cosmo = mndd_one_to_one = 0`` and NaN for the five fractions, which are undefined there.

    Raises:
        ValueError: ``true`` and ``pred`` differ in length.
    """
    t, p = _labelled(true, pred)
    pages = int(t.size)
    true_segments, pred_segments = segments(t), segments(p)
    if pages == 0:
        nan = float("nan")
        return {
            "precision": nan, "recall": nan, "f1": nan, "sq": nan, "pq": nan, "mndd_cosmo": 0, "mndd_one_to_one": 0,
            "pages": 0, "n_true_segments": 0, "n_pred_segments": 0,
        }  # fmt: skip

    inter = _overlaps(true_segments, pred_segments)  # [n_true, n_pred]
    lengths_t = np.diff(np.asarray(true_segments), axis=1)  # [n_true, 1]
    lengths_p = np.diff(np.asarray(pred_segments), axis=1).T  # [1, n_pred]
    union = lengths_t + lengths_p - inter
    matched = 2 * inter > union  # IoU > 0.5, in integers so that exactly 0.5 never matches
    n_matches = int(matched.sum())
    precision = n_matches / len(pred_segments)
    recall = n_matches / len(true_segments)
    f1 = 2 * precision * recall / (precision + recall) if n_matches else 0.0
    sq = float((inter[matched] / union[matched]).mean()) if n_matches else 0.0

    rows, cols = linear_sum_assignment(inter, maximize=True)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "sq": sq,
        "pq": f1 * sq,
        "mndd_cosmo": pages - int(inter.max(axis=1).sum()),
        "mndd_one_to_one": pages - int(inter[rows, cols].sum()),
        "pages": pages,
        "n_true_segments": len(true_segments),
        "n_pred_segments": len(pred_segments),
    }


# ---------------------------------------------------------------------------------------------------------------
# page level
# ---------------------------------------------------------------------------------------------------------------


def page_scores(
    true: np.ndarray, pred: np.ndarray, class_names: Sequence[str]
) -> tuple[dict[str, float], pd.DataFrame]:
    """Page classification scores pooled over the given pages.

    Args:
        true: True labels ``[pages]``, −1 for unlabelled pages (dropped).
        pred: Predicted class indices ``[pages]`` in ``0..len(class_names)-1``.
        class_names: Names of the classes, in label order.

    Returns:
        ``(scores, per_class)``: ``scores`` has ``accuracy``, ``macro_f1`` (over classes present in ``true`` or
        ``pred``), ``macro_f1_all9`` (over all ``len(class_names)`` classes, absent ones scoring 0) and
        ``pages_evaluated``, the three scores NaN when no page is labelled; ``per_class`` has one row per class
        with columns ``class, label, precision, recall, f1, support`` (support = true pages of the class; a
        class never predicted or never true scores 0).

    Raises:
        ValueError: lengths differ, or a labelled page has a prediction outside the classes.
    """
    t, p = _labelled(true, pred, "pooled pages")
    n_classes = len(class_names)
    outside = (p < 0) | (p >= n_classes)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} labelled pages have predictions outside 0..{n_classes - 1} "
            f"(e.g. {int(p[outside][0])}); predictions must be class indices into class_names"
        )
    labels = list(range(n_classes))
    if t.size == 0:
        nan = float("nan")
        scores = {"accuracy": nan, "macro_f1": nan, "macro_f1_all9": nan, "pages_evaluated": 0}
        precision = recall = f1 = np.zeros(n_classes)
        support = np.zeros(n_classes, dtype=np.int64)
    else:
        scores = {
            "accuracy": float((t == p).mean()),
            "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
            "macro_f1_all9": float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
            "pages_evaluated": int(t.size),
        }
        precision, recall, f1, support = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    per_class = pd.DataFrame(
        {
            "class": list(class_names),
            "label": labels,
            "precision": np.asarray(precision, dtype=float),
            "recall": np.asarray(recall, dtype=float),
            "f1": np.asarray(f1, dtype=float),
            "support": np.asarray(support, dtype=np.int64),
        },
        columns=CLASS_COLUMNS,
    )
    return scores, per_class


# ---------------------------------------------------------------------------------------------------------------
# both levels over a set of books
# ---------------------------------------------------------------------------------------------------------------


def evaluate_books(
    books: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str]
) -> tuple[dict[str, float], pd.DataFrame, pd.DataFrame]:
    """Page-level (pooled) and document-level (mean over books) scores of a set of books.

    Args:
        books: ``{book_id: (true [pages], pred [pages])}``; −1 in ``true`` marks unlabelled pages.
        class_names: Names of the classes, in label order.

    Returns:
        ``(summary, per_class, per_book)``.

        ``summary``: ``accuracy, macro_f1, macro_f1_all9`` pooled over all labelled pages;
        ``doc_precision, doc_recall, doc_f1, sq, pq, mndd_cosmo, mndd_one_to_one`` (pages), ``mndd_cosmo_norm,
        mndd_one_to_one_norm`` (per-book value / labelled pages) averaged over the books with at least one
        labelled page; ``books_evaluated`` (the number of such books) and ``pages_evaluated`` (labelled pages).
        Document-level values are NaN when no book has a labelled page.

        ``per_class``: see :func:`page_scores`.

        ``per_book``: one row per book in ``books`` order, columns ``book, pages, pages_ignored,
        n_true_segments, n_pred_segments, accuracy, precision, recall, f1, sq, pq, mndd_cosmo, mndd_one_to_one,
        mndd_cosmo_norm, mndd_one_to_one_norm``; fractions are NaN for a book with no labelled page.

    Raises:
        ValueError: a book's ``true`` and ``pred`` differ in length, or a prediction is not a class index.
    """
    rows: list[dict[str, object]] = []
    pooled_true: list[np.ndarray] = []
    pooled_pred: list[np.ndarray] = []
    for book_id, (true, pred) in books.items():
        t, p = _labelled(true, pred, f"book {book_id}")
        pooled_true.append(t)
        pooled_pred.append(p)
        scores = document_scores(t, p)
        pages = scores["pages"]
        rows.append(
            {
                "book": str(book_id),
                "pages": pages,
                "pages_ignored": int(np.asarray(true).size) - pages,
                "n_true_segments": scores["n_true_segments"],
                "n_pred_segments": scores["n_pred_segments"],
                "accuracy": float((t == p).mean()) if pages else float("nan"),
                **{key: scores[key] for key in DOCUMENT_KEYS},
                "mndd_cosmo_norm": scores["mndd_cosmo"] / pages if pages else float("nan"),
                "mndd_one_to_one_norm": scores["mndd_one_to_one"] / pages if pages else float("nan"),
            }
        )
    per_book = pd.DataFrame(rows, columns=BOOK_COLUMNS)

    page_level, per_class = page_scores(
        np.concatenate(pooled_true) if pooled_true else np.zeros(0, dtype=np.int64),
        np.concatenate(pooled_pred) if pooled_pred else np.zeros(0, dtype=np.int64),
        class_names,
    )
    evaluated = per_book[per_book["pages"] > 0]

    def mean(column: str) -> float:
        return float(evaluated[column].astype(float).mean()) if len(evaluated) else float("nan")

    summary: dict[str, float] = {
        "accuracy": page_level["accuracy"],
        "macro_f1": page_level["macro_f1"],
        "macro_f1_all9": page_level["macro_f1_all9"],
        "doc_precision": mean("precision"),
        "doc_recall": mean("recall"),
        "doc_f1": mean("f1"),
        "sq": mean("sq"),
        "pq": mean("pq"),
        "mndd_cosmo": mean("mndd_cosmo"),
        "mndd_one_to_one": mean("mndd_one_to_one"),
        "mndd_cosmo_norm": mean("mndd_cosmo_norm"),
        "mndd_one_to_one_norm": mean("mndd_one_to_one_norm"),
        "books_evaluated": int(len(evaluated)),
        "pages_evaluated": int(page_level["pages_evaluated"]),
    }
    return summary, per_class, per_book


# ---------------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------------


def confusion_matrix_figure(
    true: np.ndarray, pred: np.ndarray, class_names: Sequence[str], title: str
) -> Figure:
    """Row-normalised confusion matrix with the page counts written in the cells.

    Unlabelled pages (−1 in ``true``) are left out; predictions outside the classes are not counted. A class with
    no true page has an all-zero row.

    Args:
        true: True labels ``[pages]``.
        pred: Predicted class indices ``[pages]``.
        class_names: Names of the classes, in label order.
        title: Axes title.

    Returns:
        A figure with two axes (the matrix and its colour bar), drawn without pyplot so that it needs no
        interactive backend and nothing has to be closed.
    """
    t, p = _labelled(true, pred, "pooled pages")
    n_classes = len(class_names)
    labels = list(range(n_classes))
    if t.size:
        counts = confusion_matrix(t, p, labels=labels)  # [true, pred]
    else:
        counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)

    side = 0.55 * n_classes + 2.5
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n_classes):
        for j in range(n_classes):
            ax.text(
                j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                color="white" if fractions[i, j] > 0.5 else "black",
            )  # fmt: skip
    ax.set_xticks(labels, list(class_names), rotation=45, ha="right")
    ax.set_yticks(labels, list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="fraction of the true class's pages")
    return fig


def _class_palette(n_classes: int) -> np.ndarray:
    """RGB colours ``[n_classes + 1, 3]``; the last row is the unlabelled grey, so index −1 picks it."""
    if n_classes > len(CLASS_COLOURS):
        raise ValueError(f"{n_classes} classes but only {len(CLASS_COLOURS)} colours in CLASS_COLOURS; add more")
    return np.array([to_rgb(c) for c in (*CLASS_COLOURS[:n_classes], IGNORE_COLOUR)])


def book_strip_figure(
    books: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str], max_books: int = 12
) -> Figure:
    """Per book, the true page classes above the predicted ones as two strips of coloured cells.

    Unlabelled pages (−1, in either row) are grey; every page is shown, including unlabelled ones.

    Args:
        books: ``{book_id: (true [pages], pred [pages])}``.
        class_names: Names of the classes, in label order.
        max_books: Only the first ``max_books`` books (in ``books`` order) are drawn.

    Returns:
        A figure with one axes per drawn book (one blank axes when there is none) and a legend of class colours.

    Raises:
        ValueError: a book's sequences differ in length or hold a label outside −1..len(class_names)-1.
    """
    n_classes = len(class_names)
    palette = _class_palette(n_classes)
    shown = list(books.items())[: max(max_books, 0)]
    n_rows = max(len(shown), 1)
    fig = Figure(figsize=(12, 0.55 * n_rows + 1.6), layout="constrained")
    axes = fig.subplots(n_rows, 1, squeeze=False)[:, 0]
    if not shown:
        axes[0].text(0.5, 0.5, "no books", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()

    for ax, (book_id, (true, pred)) in zip(axes, shown):
        t = _as_labels(true, f"book {book_id}", "true labels")
        p = _as_labels(pred, f"book {book_id}", "predictions")
        if t.size != p.size:
            raise ValueError(
                f"book {book_id}: true labels cover {t.size} pages but predictions cover {p.size}; "
                "pass one prediction per page of the book"
            )
        strips = np.stack([t, p])  # [2, pages]
        bad = (strips < IGNORE_LABEL) | (strips >= n_classes)
        if bad.any():
            raise ValueError(
                f"book {book_id}: label {int(strips[bad][0])} is outside -1..{n_classes - 1}; "
                "labels must be class indices into class_names or -1"
            )
        pages = strips.shape[1]
        ax.set_ylabel(str(book_id), rotation=0, ha="right", va="center", fontsize=8)
        if pages == 0:
            ax.text(0.5, 0.5, "no pages", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        cells = palette[strips]  # [2, pages, 3]; −1 indexes the grey last row
        ax.imshow(cells, aspect="auto", interpolation="nearest", extent=(0, pages, 2, 0))
        ax.set_yticks([0.5, 1.5], ["true", "pred"], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1].set_xlabel("page")

    handles = [Patch(facecolor=palette[i], label=name) for i, name in enumerate(class_names)]
    handles.append(Patch(facecolor=IGNORE_COLOUR, label="unlabelled"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    return fig
