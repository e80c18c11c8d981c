"""Lazy book views: page numbering from file names, sidecar reading and the problems it reports."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from multimodal_suite.common.comics.books import ComicBook, PageRef, book_from_files, natural_page_index, scan_books


def _jpeg(color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 30), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("000.jpg", 0), ("007.jpg", 7), ("12.png", 12), ("0119.jpeg", 119), ("cover.jpg", None), ("3a.jpg", None),
     ("-1.jpg", None), ("000.ocr.json", None), ("book/042.jpg", 42), ("٣.jpg", None)],
)
def test_natural_page_index(name: str, expected: int | None) -> None:
    assert natural_page_index(name) == expected


def test_book_from_files_orders_by_number_not_string(caplog: pytest.LogCaptureFixture) -> None:
    names = ["10.jpg", "2.jpg", "1.jpg", "0.jpg", "9.jpg", "0.ocr.json", "cover.jpg", "notes.txt", "11.PNG"]
    with caplog.at_level(logging.WARNING):
        book = book_from_files("abc", "/books/abc", names)
    assert [page.page_index for page in book.pages] == [0, 1, 2, 9, 10, 11]
    assert book.pages[3].image_path == "/books/abc/9.jpg"
    assert "cover.jpg" in caplog.text
    assert len(book) == book.num_pages == 6


def test_duplicate_page_number_keeps_first_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        book = book_from_files("abc", "/b", ["7.jpg", "007.jpg"])
    assert [page.image_path for page in book.pages] == ["/b/007.jpg"]
    assert "page 7" in caplog.text


def test_page_reads_image_and_sidecars(tmp_path: Path) -> None:
    (tmp_path / "3.jpg").write_bytes(_jpeg())
    (tmp_path / "3.ocr.json").write_text(json.dumps({"OCRResult": "HEY LOOK OUT!"}))
    panels = [{"bbox": [1, 2, 3, 4], "text": "HI"}, {"bbox": [0, 0, 5, 5.5]}]
    (tmp_path / "3.panels.json").write_text(json.dumps(panels))
    page = PageRef("abc", 3, str(tmp_path / "3.jpg"))

    assert page.read_image_bytes() == (tmp_path / "3.jpg").read_bytes()
    image, problem = page.read_image()
    assert problem is None and image is not None and image.size == (20, 30)
    assert page.read_ocr() == ("HEY LOOK OUT!", None)
    assert page.read_panels() == ([{"bbox": [1, 2, 3, 4], "text": "HI"}, {"bbox": [0, 0, 5, 5.5], "text": ""}], None)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, ("", "ocr_missing")),
        ('{"OCRResult": ""}', ("", None)),
        ('{"OCRResult": "cut of', ("", "ocr_malformed")),
        ('{"text": "other tool"}', ("", "ocr_malformed")),
        ('{"OCRResult": 3}', ("", "ocr_malformed")),
        ('["OCRResult"]', ("", "ocr_malformed")),
    ],
)
def test_read_ocr_problems(tmp_path: Path, content: str | None, expected: tuple[str, str | None]) -> None:
    if content is not None:
        (tmp_path / "000.ocr.json").write_text(content)
    assert PageRef("abc", 0, str(tmp_path / "000.jpg")).read_ocr() == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, ([], "panels_missing")),
        ("[]", ([], None)),
        ("[{", ([], "panels_malformed")),
        ('{"bbox": [0, 0, 1, 1]}', ([], "panels_malformed")),
        ('[{"bbox": [0, 0, 1]}]', ([], "panels_malformed")),
        ('[{"bbox": [0, 0, 1, true]}]', ([], "panels_malformed")),
    ],
)
def test_read_panels_problems(tmp_path: Path, content: str | None, expected: tuple[list, str | None]) -> None:
    if content is not None:
        (tmp_path / "000.panels.json").write_text(content)
    assert PageRef("abc", 0, str(tmp_path / "000.jpg")).read_panels() == expected


def test_read_image_reports_empty_and_truncated(tmp_path: Path) -> None:
    (tmp_path / "000.jpg").write_bytes(b"")
    (tmp_path / "001.jpg").write_bytes(_jpeg()[:200])
    assert PageRef("abc", 0, str(tmp_path / "000.jpg")).read_image() == (None, "image_empty")
    assert PageRef("abc", 1, str(tmp_path / "001.jpg")).read_image() == (None, "image_unreadable")
    assert PageRef("abc", 2, str(tmp_path / "002.jpg")).read_image() == (None, "image_unreadable")


def test_scan_books_lists_book_folders_sorted(tmp_path: Path) -> None:
    for book_id, names in {"ff000001": ["0.jpg", "10.jpg", "2.jpg"], "0a000002": ["000.jpg", "001.jpg"]}.items():
        (tmp_path / book_id).mkdir()
        for name in names:
            (tmp_path / book_id / name).write_bytes(_jpeg())
    (tmp_path / "empty0000").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".sample_data").write_text("marker")
    (tmp_path / "ff000001" / "nested").mkdir()
    (tmp_path / "ff000001" / "nested" / "5.jpg").write_bytes(_jpeg())

    books = scan_books(str(tmp_path))
    assert list(books) == ["0a000002", "empty0000", "ff000001"]
    assert isinstance(books["ff000001"], ComicBook)
    assert [page.page_index for page in books["ff000001"].pages] == [0, 2, 10]
    assert books["empty0000"].pages == []
    assert books["0a000002"].root == str(tmp_path / "0a000002")
    assert scan_books(str(tmp_path / "nowhere")) == {}
