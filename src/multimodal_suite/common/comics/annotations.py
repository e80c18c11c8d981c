"""CoSMo comic-book annotations → one class label per page.

A CoSMo annotation file is a list of books ``{hash_code, title, stories, textstories, advertisements, covers,
credits, art, text, back_covers}``; each list holds ranges ``{title, page_start, page_end}``, inclusive and
0-based with the same numbers as the page images (``NNN.jpg``). The JSON carries no page count: a book's length
is its number of image files, or :func:`annotated_length` when the images are not at hand.

Rules real files depend on:

* ranges are applied in :data:`RANGE_ORDER`, and a later range overwrites an earlier one on the same page
  (an advertisement or cover inside a story's range wins);
* a story's ``page_start`` page is ``first-page`` and its other pages ``story``, except that a story whose title
  contains "continue" (any case) resumes an interrupted story and has no ``first-page``;
* a missing ``page_end`` (absent or null) means ``page_start``;
* pages in no range are :data:`IGNORE_LABEL`;
* range pages outside the book and reversed ranges are ignored and reported as rejects.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pandas as pd

from multimodal_suite.common.rejects import Rejects

CLASS_NAMES: tuple[str, ...] = (
    "advertisement",
    "cover",
    "story",
    "textstory",
    "first-page",
    "credits",
    "art",
    "text",
    "back_cover",
)
NUM_CLASSES: int = len(CLASS_NAMES)
IGNORE_LABEL: int = -1
CLASS_INDEX: dict[str, int] = {name: index for index, name in enumerate(CLASS_NAMES)}

STORY_KEY = "stories"
# Application order: later keys overwrite earlier ones on the same page. Stories map to story/first-page.
RANGE_ORDER: tuple[tuple[str, str], ...] = (
    (STORY_KEY, "story"),
    ("textstories", "textstory"),
    ("advertisements", "advertisement"),
    ("covers", "cover"),
    ("credits", "credits"),
    ("art", "art"),
    ("text", "text"),
    ("back_covers", "back_cover"),
)
CONTINUE_MARKER = "continue"
LABEL_COLUMNS = ["book_id", "page_index", "label", "label_name"]


def _ranges(book: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yield ``(key, position, range)`` for every range of ``book``, in application order."""
    for key, _ in RANGE_ORDER:
        for position, item in enumerate(book.get(key) or []):
            yield key, position, item


def _bounds(item: Any) -> tuple[int, int] | None:
    """``(page_start, page_end)`` of a range (missing/null end = start), or None when it is not usable."""
    if not isinstance(item, dict):
        return None
    start = item.get("page_start")
    end = item.get("page_end")
    end = start if end is None else end
    # bool is an int subclass; a true/false page number is a broken record, not page 1/0.
    if isinstance(start, int) and isinstance(end, int) and not isinstance(start, bool) and not isinstance(end, bool):
        return start, end
    return None


def is_continuation(story: dict[str, Any]) -> bool:
    """Whether a story range resumes an interrupted story (its title contains "continue", any case)."""
    return CONTINUE_MARKER in str(story.get("title") or "").lower()


def annotated_length(book: dict[str, Any]) -> int:
    """Highest page of any usable range + 1 (0 when there is none).

    Reversed ranges are not usable, so they do not lengthen the book: in the CoSMo splits the reversed ranges
    (e.g. ``19..18`` after a story ending on page 18) start one page past the book's last image.
    """
    highest = -1
    for _, _, item in _ranges(book):
        bounds = _bounds(item)
        if bounds is not None and 0 <= bounds[0] <= bounds[1]:
            highest = max(highest, bounds[1])
    return highest + 1


def book_page_labels(book: dict[str, Any], num_pages: int) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Per-page labels of one annotated book.

    Args:
        book: One CoSMo book record.
        num_pages: The book's length (its number of page images).

    Returns:
        ``labels`` int64 ``[num_pages]`` with class indices into :data:`CLASS_NAMES` or :data:`IGNORE_LABEL`,
        and reject rows ``{"item", "reason", "detail"}`` for ranges (or parts of ranges) that were ignored.
    """
    book_id = str(book.get("hash_code", "?"))
    labels = np.full(num_pages, IGNORE_LABEL, dtype=np.int64)
    rejects: list[dict[str, str]] = []
    class_of = dict(RANGE_ORDER)
    for key, position, item in _ranges(book):
        title = item.get("title", "") if isinstance(item, dict) else ""
        where = f"{book_id}/{key}[{position}]"
        bounds = _bounds(item)
        if bounds is None:
            rejects.append({"item": where, "reason": "range_invalid", "detail": f"not a page range: {item!r}"})
            continue
        start, end = bounds
        if start > end:
            rejects.append({"item": where, "reason": "range_reversed", "detail": f"pages {start}..{end} ({title!r})"})
            continue
        first, last = max(start, 0), min(end, num_pages - 1)
        if first != start or last != end:
            rejects.append(
                {
                    "item": where,
                    "reason": "range_out_of_book",
                    "detail": f"pages {start}..{end} of a {num_pages}-page book; only {first}..{last} applied",
                }
            )
        if first > last:
            continue
        labels[first : last + 1] = CLASS_INDEX[class_of[key]]
        if key == STORY_KEY and first == start and not is_continuation(item):
            labels[start] = CLASS_INDEX["first-page"]
    return labels, rejects


def labels_table(
    annotations: list[dict[str, Any]], page_counts: dict[str, int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-page label table of an annotation file.

    Args:
        annotations: CoSMo book records.
        page_counts: Pages on disk per book id; None takes each book's length from its annotations. A book
            absent from it (no folder on disk) is skipped and reported as ``book_missing``.

    Returns:
        ``(labels, rejects)``: one row per page with columns ``book_id, page_index, label, label_name``
        (``label_name`` is None for unlabelled pages), and the rejects report ``stage, item, reason, detail``.
    """
    rejects = Rejects(stage="annotations")
    frames: list[pd.DataFrame] = []
    seen: set[str] = set()
    names = np.array(list(CLASS_NAMES) + [None], dtype=object)  # index -1 picks the trailing None
    for book in annotations:
        book_id = str(book.get("hash_code", ""))
        if not book_id:
            rejects.add(repr(book.get("title", "?")), "book_invalid", "no hash_code")
            continue
        if book_id in seen:
            rejects.add(book_id, "book_duplicate", "annotated more than once; the first record is used")
            continue
        seen.add(book_id)
        if page_counts is None:
            num_pages = annotated_length(book)
        elif book_id in page_counts:
            num_pages = int(page_counts[book_id])
        else:
            rejects.add(book_id, "book_missing", "annotated but no book folder with page images was found")
            continue
        labels, book_rejects = book_page_labels(book, num_pages)
        for row in book_rejects:
            rejects.add(row["item"], row["reason"], row["detail"])
        frames.append(
            pd.DataFrame(
                {
                    "book_id": book_id,
                    "page_index": np.arange(num_pages, dtype=np.int64),
                    "label": labels,
                    "label_name": names[labels],
                }
            )
        )
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LABEL_COLUMNS)
    return table[LABEL_COLUMNS], rejects.to_frame()
