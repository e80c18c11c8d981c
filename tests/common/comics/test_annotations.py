"""CoSMo annotation reader: exact counts on the real splits, and each labelling rule on hand-built books."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multimodal_suite.common.comics.annotations import (
    CLASS_NAMES,
    IGNORE_LABEL,
    NUM_CLASSES,
    annotated_length,
    book_page_labels,
    labels_table,
)

COSMO = Path(__file__).resolve().parents[2] / "data" / "cosmo"
A, C, S, T, F = (CLASS_NAMES.index(name) for name in ("advertisement", "cover", "story", "textstory", "first-page"))


def _book(**ranges: list[tuple[int, int | None] | tuple[int, int | None, str]]) -> dict:
    """A CoSMo record from ``key=[(start, end[, title]), ...]``."""
    record: dict = {"hash_code": "b0000001", "title": "Hand-built"}
    for key, items in ranges.items():
        record[key] = [
            {"title": item[2] if len(item) > 2 else "", "page_start": item[0], "page_end": item[1]} for item in items
        ]
    return record


def test_class_order() -> None:
    assert CLASS_NAMES == (
        "advertisement", "cover", "story", "textstory", "first-page", "credits", "art", "text", "back_cover",
    )
    assert NUM_CLASSES == 9
    assert IGNORE_LABEL == -1


@pytest.mark.parametrize(
    ("split", "books", "pages", "labelled", "per_class"),
    [
        (
            "comics_train.json", 301, 14_474, 14_435,
            {"advertisement": 1_262, "cover": 341, "story": 10_345, "textstory": 603, "first-page": 1_884},
        ),
        (
            "comics_val.json", 43, 2_080, 2_072,
            {"advertisement": 172, "cover": 49, "story": 1_473, "textstory": 82, "first-page": 296},
        ),
    ],
)
def test_real_splits_exact_counts(split: str, books: int, pages: int, labelled: int, per_class: dict) -> None:
    annotations = json.loads((COSMO / split).read_text())
    table, rejects = labels_table(annotations)

    assert table["book_id"].nunique() == books
    assert len(table) == pages
    assert int((table["label"] != IGNORE_LABEL).sum()) == labelled
    counts = table.loc[table["label"] >= 0, "label_name"].value_counts().to_dict()
    assert counts == per_class
    assert table["label_name"].isna().sum() == pages - labelled
    # each split has exactly one reversed range (one page past its book's last annotated page)
    assert rejects["reason"].tolist() == ["range_reversed"]
    assert list(rejects.columns) == ["stage", "item", "reason", "detail"]


def test_annotated_length_ignores_reversed_ranges() -> None:
    book = _book(covers=[(0, 0)], stories=[(1, 18), (19, 18)])
    assert annotated_length(book) == 19
    assert annotated_length(_book()) == 0


def test_later_ranges_overwrite_earlier_ones() -> None:
    book = _book(stories=[(0, 5, "Long Story")], advertisements=[(3, 3)], covers=[(0, 0)], back_covers=[(5, 5)])
    labels, rejects = book_page_labels(book, 6)
    assert labels.tolist() == [C, S, S, A, S, CLASS_NAMES.index("back_cover")]
    assert rejects == []


def test_textstory_inside_story_and_ad_over_textstory() -> None:
    book = _book(stories=[(0, 3, "X")], textstories=[(2, 3)], advertisements=[(3, None)])
    labels, _ = book_page_labels(book, 4)
    assert labels.tolist() == [F, S, T, A]


def test_continued_story_has_no_first_page() -> None:
    book = _book(stories=[(0, 2, "Outlaws"), (4, 6, "Outlaws CONTINUE"), (7, 8, "Continued Fractions")])
    labels, _ = book_page_labels(book, 9)
    assert labels.tolist() == [F, S, S, IGNORE_LABEL, S, S, S, S, S]


def test_missing_or_null_page_end_means_one_page() -> None:
    book = _book(advertisements=[(1, None)])
    book["covers"] = [{"title": "Front", "page_start": 0}]
    labels, rejects = book_page_labels(book, 3)
    assert labels.tolist() == [C, A, IGNORE_LABEL]
    assert rejects == []


def test_unlabelled_pages_are_ignore_label() -> None:
    labels, _ = book_page_labels(_book(stories=[(1, 2, "Y")]), 5)
    assert labels.dtype == np.int64
    assert labels.tolist() == [IGNORE_LABEL, F, S, IGNORE_LABEL, IGNORE_LABEL]


def test_range_past_end_is_clipped_and_rejected() -> None:
    labels, rejects = book_page_labels(_book(stories=[(0, 3, "Z")], advertisements=[(4, 7)]), 5)
    assert labels.tolist() == [F, S, S, S, A]
    assert [row["reason"] for row in rejects] == ["range_out_of_book"]
    assert "4..7" in rejects[0]["detail"] and rejects[0]["item"] == "b0000001/advertisements[0]"


def test_range_wholly_outside_the_book_labels_nothing() -> None:
    labels, rejects = book_page_labels(_book(stories=[(6, 9, "Far")]), 5)
    assert (labels == IGNORE_LABEL).all()
    assert [row["reason"] for row in rejects] == ["range_out_of_book"]


def test_story_clipped_at_its_start_has_no_first_page() -> None:
    labels, _ = book_page_labels(_book(stories=[(-2, 1, "Begun before")]), 3)
    assert labels.tolist() == [S, S, IGNORE_LABEL]


def test_reversed_range_is_ignored_and_rejected() -> None:
    labels, rejects = book_page_labels(_book(stories=[(0, 2, "Fine"), (2, 1, "Backwards")]), 3)
    assert labels.tolist() == [F, S, S]
    assert [row["reason"] for row in rejects] == ["range_reversed"]


def test_unusable_range_is_rejected() -> None:
    book = _book(covers=[(0, 0)])
    book["advertisements"] = [{"title": "broken", "page_start": "3"}]
    labels, rejects = book_page_labels(book, 2)
    assert labels.tolist() == [C, IGNORE_LABEL]
    assert [row["reason"] for row in rejects] == ["range_invalid"]


def test_labels_table_uses_page_counts_and_reports_missing_books() -> None:
    present = _book(covers=[(0, 0)], stories=[(1, 2, "S")])
    missing = {**_book(covers=[(0, 0)]), "hash_code": "b0000002"}
    table, rejects = labels_table([present, missing], {"b0000001": 5})
    assert table["book_id"].unique().tolist() == ["b0000001"]
    assert table["page_index"].tolist() == [0, 1, 2, 3, 4]
    assert table["label"].tolist() == [C, F, S, IGNORE_LABEL, IGNORE_LABEL]
    assert table["label_name"].tolist()[:3] == ["cover", "first-page", "story"]
    assert rejects[["stage", "item", "reason"]].values.tolist() == [["annotations", "b0000002", "book_missing"]]


def test_labels_table_empty() -> None:
    table, rejects = labels_table([], None)
    assert list(table.columns) == ["book_id", "page_index", "label", "label_name"]
    assert table.empty and rejects.empty
