"""ComicBookFolderDataset: round trip, numeric page order, and the guard that protects real collections."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from kedro.io import DataCatalog, DatasetError

from multimodal_suite.datasets.comic_books_dataset import ComicBookFolderDataset
from multimodal_suite.datasets.generated_folder import SAMPLE_MARKER


def _files(book_id: str, pages: int, padded: bool = True) -> dict[str, bytes]:
    files = {}
    for page in range(pages):
        stem = f"{book_id}/{page:03d}" if padded else f"{book_id}/{page}"
        files[f"{stem}.jpg"] = f"image {page}".encode()
        files[f"{stem}.ocr.json"] = json.dumps({"OCRResult": f"text {page}"}).encode()
    return files


def test_round_trip(tmp_path: Path) -> None:
    dataset = ComicBookFolderDataset(filepath=str(tmp_path / "books"))
    assert not dataset.exists()
    files = {**_files("bb000002", 3), **_files("aa000001", 2)}
    dataset.save(files)

    assert dataset.exists()
    assert (tmp_path / "books" / SAMPLE_MARKER).is_file()
    books = dataset.load()
    assert list(books) == ["aa000001", "bb000002"]
    for key, data in files.items():
        assert (tmp_path / "books" / key).read_bytes() == data
    page = books["bb000002"].pages[2]
    assert (page.book_id, page.page_index) == ("bb000002", 2)
    assert page.read_image_bytes() == b"image 2"
    assert page.read_ocr() == ("text 2", None)


def test_unpadded_names_load_in_numeric_order(tmp_path: Path) -> None:
    dataset = ComicBookFolderDataset(filepath=tmp_path)
    dataset.save(_files("cc000003", 12, padded=False))
    pages = dataset.load()["cc000003"].pages
    assert [page.page_index for page in pages] == list(range(12))
    assert [Path(page.image_path).name for page in pages][9:] == ["9.jpg", "10.jpg", "11.jpg"]


def test_guard_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    real = tmp_path / "my_books" / "00411460"
    real.mkdir(parents=True)
    (real / "000.jpg").write_bytes(b"precious")
    dataset = ComicBookFolderDataset(filepath=str(tmp_path / "my_books"))
    with pytest.raises(DatasetError, match=SAMPLE_MARKER):
        dataset.save(_files("aa000001", 1))
    assert (real / "000.jpg").read_bytes() == b"precious"
    assert not (tmp_path / "my_books" / "aa000001").exists()
    assert list(dataset.load()) == ["00411460"]  # loading a real collection is of course fine


def test_resave_replaces_previous_sample_books(tmp_path: Path) -> None:
    dataset = ComicBookFolderDataset(filepath=tmp_path / "books")
    dataset.save({**_files("aa000001", 2), **_files("bb000002", 2)})
    dataset.save(_files("bb000002", 1))
    assert list(dataset.load()) == ["bb000002"]
    assert sorted(p.name for p in (tmp_path / "books" / "bb000002").iterdir()) == ["000.jpg", "000.ocr.json"]


@pytest.mark.parametrize("key", ["../escape.jpg", "book/sub/000.jpg", "000.jpg", "/abs/000.jpg", "book/.hidden"])
def test_rejects_keys_outside_book_folders(tmp_path: Path, key: str) -> None:
    dataset = ComicBookFolderDataset(filepath=tmp_path / "books")
    dataset.save(_files("aa000001", 1))
    with pytest.raises(DatasetError, match="book_id"):
        dataset.save({key: b"x"})
    assert list(dataset.load()) == ["aa000001"]  # a refused save deletes nothing


def test_load_missing_folder_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="demo_data"):
        ComicBookFolderDataset(filepath=tmp_path / "none").load()


def test_describe_preview_and_catalog(tmp_path: Path) -> None:
    catalog = DataCatalog.from_config(
        {
            "comic_books": {
                "type": "multimodal_suite.datasets.comic_books_dataset.ComicBookFolderDataset",
                "filepath": str(tmp_path / "books"),
            }
        }
    )
    catalog.save("comic_books", _files("aa000001", 4))
    assert catalog.load("comic_books")["aa000001"].num_pages == 4
    dataset = ComicBookFolderDataset(filepath=tmp_path / "books", image_extensions=[".jpg"])
    assert "books" in str(dataset._describe()["filepath"])
    preview = dataset.preview()  # the image grid itself is checked in test_previews.py
    assert base64.b64decode(preview).startswith(b"\x89PNG")
