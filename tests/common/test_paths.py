"""The one-path-component rule for user-supplied names, and the book folders it guards."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from multimodal_suite.common.comics.books import book_folder, book_from_files, scan_books
from multimodal_suite.common.paths import (
    is_safe_component,
    name_parameter,
    quoted_params_form,
    safe_component,
)

UNSAFE = ["..", ".", "../x", "x/..", "/etc", "/", "a/b", "a\\b", "\\\\server\\share", "", "a\0b"]


@pytest.mark.parametrize("name", UNSAFE)
def test_anything_but_one_component_is_refused_naming_what_it_is(name: str) -> None:
    assert not is_safe_component(name)
    with pytest.raises(ValueError, match=r"^tagging\.target\.folder .*one folder or file name"):
        safe_component(name, "tagging.target.folder")


@pytest.mark.parametrize("name", ["00290", "00100", "a b", "x.y", "...", "café", "-1", "e"])
def test_one_component_is_accepted_as_written(name: str) -> None:
    assert is_safe_component(name) and safe_component(name, "book id") == name


@pytest.mark.parametrize(("value", "shown"), [(1, "the number 1"), (64, "the number 64"),
                                              (1000.0, "the number 1000.0"), (True, "a boolean"), (None, "null")])
def test_a_value_yaml_typed_is_refused_with_the_quoted_form(value, shown) -> None:
    with pytest.raises(ValueError) as raised:
        name_parameter(value, "tagging.target.folder")
    message = str(raised.value)
    assert message.startswith(f"tagging.target.folder arrived as {shown}, not a name")
    assert quoted_params_form("tagging.target.folder", "00100") in message
    assert quoted_params_form("tagging.target.folder", "00100") == "--params \"tagging.target.folder='00100'\""


def test_name_parameter_applies_the_component_rule_to_strings() -> None:
    assert name_parameter("00100", "tagging.target.folder") == "00100"
    with pytest.raises(ValueError, match=r"tagging\.target\.folder '\.\./\.\./x' is more than one path component"):
        name_parameter("../../x", "tagging.target.folder")


@pytest.mark.parametrize("book_id", ["..", "../outside", "/abs", "a/b", "a\\b", ""])
def test_a_book_id_never_resolves_outside_the_books_folder(book_id: str) -> None:
    with pytest.raises(ValueError, match="book id"):
        book_folder("/books", book_id)
    assert book_folder("/books", "00411460") == "/books/00411460"


def test_page_names_that_are_not_one_file_name_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        book = book_from_files("abc", "/books/abc", ["0.jpg", "../1.jpg", "/2.jpg", "sub/3.jpg", "4.jpg"])
    assert [page.image_path for page in book.pages] == ["/books/abc/0.jpg", "/books/abc/4.jpg"]
    assert "'../1.jpg'" in caplog.text and "'sub/3.jpg'" in caplog.text


def test_scan_skips_a_folder_whose_name_is_not_a_book_id(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("good0001", "bad\\name"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "000.jpg").write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        books = scan_books(str(tmp_path))
    assert list(books) == ["good0001"] and books["good0001"].root == str(tmp_path / "good0001")
    assert "'bad\\\\name'" in caplog.text and "rename" in caplog.text
