"""demo_data comic books: deterministic, with real-world structure and the broken inputs pipelines must survive."""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from multimodal_suite.common.comics.annotations import CLASS_INDEX, IGNORE_LABEL, book_page_labels, labels_table
from multimodal_suite.common.params import from_params
from multimodal_suite.datasets.comic_books_dataset import ComicBookFolderDataset
from multimodal_suite.pipelines.demo_data import create_pipeline
from multimodal_suite.pipelines.demo_data.comic_books import plan_books
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books
from multimodal_suite.pipelines.demo_data.params import DemoBooksConfig

PARAMS = {"seed": 7}
CONFIG = from_params(DemoBooksConfig, PARAMS, "demo_data")

Outputs = tuple[dict[str, bytes], list[dict]]


@pytest.fixture(scope="module")
def generated() -> Outputs:
    return generate_comic_books(PARAMS)


def _books(files: dict[str, bytes]) -> dict[str, list[str]]:
    books: dict[str, list[str]] = {}
    for key in files:
        book_id, name = key.split("/")
        books.setdefault(book_id, []).append(name)
    return books


def test_deterministic(generated: Outputs) -> None:
    files, annotations = generated
    again, annotations_again = generate_comic_books(PARAMS)
    assert again == files  # same keys, same bytes
    assert annotations_again == annotations
    other, _ = generate_comic_books({"seed": 8})
    assert other != files


def test_every_planned_page_is_generated(generated: Outputs) -> None:
    files, annotations = generated
    plans = plan_books(CONFIG)
    on_disk = [plan for plan in plans if plan.on_disk]
    expected = {f"{plan.book_id}/{plan.image_name(page)}.{kind}"
                for plan in on_disk for page in range(plan.num_pages) for kind in ("jpg", "panels.json")}
    expected |= {f"{plan.book_id}/{plan.image_name(page)}.ocr.json" for plan in on_disk
                 for page in range(plan.num_pages) if page not in plan.ocr_missing_pages}
    assert set(files) == expected
    assert len(on_disk) == CONFIG.num_books and len(annotations) == len(plans) == CONFIG.num_books + 1
    assert all(Image.open(io.BytesIO(files[f"{plan.book_id}/{plan.image_name(0)}.jpg"])).size == CONFIG.page_size
               for plan in on_disk)


def test_collection_shape(generated: Outputs) -> None:
    files, annotations = generated
    books = _books(files)
    lengths = {book_id: sum(name.endswith(".jpg") for name in names) for book_id, names in books.items()}
    assert len(books) >= 16
    assert all(len(book_id) == 8 and int(book_id, 16) >= 0 for book_id in books)
    assert max(lengths.values()) > 512
    assert sum(12 <= n <= 80 for n in lengths.values()) >= 16
    unpadded = [book_id for book_id, names in books.items() if "10.jpg" in names]
    assert len(unpadded) >= 2
    for book_id in unpadded:
        assert "000.jpg" not in books[book_id] and "1.jpg" in books[book_id]
    assert [record["hash_code"] for record in annotations] == sorted(record["hash_code"] for record in annotations)
    keys = {"hash_code", "title", "stories", "textstories", "advertisements", "covers"}
    keys |= {"credits", "art", "text", "back_covers"}
    assert all(set(record) == keys for record in annotations)
    panels = json.loads(next(data for key, data in files.items() if key.endswith(".panels.json") and len(data) > 2))
    assert set(panels[0]) == {"bbox", "text"} and len(panels[0]["bbox"]) == 4


def test_annotations_read_back_to_the_planned_labels() -> None:
    for plan in plan_books(CONFIG):
        labels, _ = book_page_labels(plan.annotation, plan.num_pages)
        assert labels.tolist() == plan.labels, plan.book_id


def test_structure_follows_real_books() -> None:
    plans = plan_books(CONFIG)
    counts = Counter(label for plan in plans for label in plan.labels)
    assert all(counts[index] > 0 for index in CLASS_INDEX.values())
    assert counts[IGNORE_LABEL] > 0
    assert counts[CLASS_INDEX["story"]] > counts[CLASS_INDEX["first-page"]] > counts[CLASS_INDEX["cover"]]
    for plan in plans:
        assert plan.labels[0] == CLASS_INDEX["cover"]
        assert CLASS_INDEX["cover"] not in plan.labels[1:]
        assert plan.labels[-1] in (CLASS_INDEX["advertisement"], CLASS_INDEX["back_cover"])
        for page, label in enumerate(plan.labels):
            if label == CLASS_INDEX["story"]:  # a story page always continues a story (maybe across an ad)
                before = [x for x in plan.labels[:page] if x != CLASS_INDEX["advertisement"]]
                assert before[-1] in (CLASS_INDEX["story"], CLASS_INDEX["first-page"])
    stories = [item for plan in plans for item in plan.annotation["stories"]]
    assert any("continue" in item["title"] for item in stories)
    ranges = [item for plan in plans for value in plan.annotation.values() if isinstance(value, list) for item in value]
    assert any("page_end" not in item for item in ranges) and any(item.get("page_end", 0) is None for item in ranges)


def test_bad_inputs_present(generated: Outputs) -> None:
    files, annotations = generated
    plans = plan_books(CONFIG)
    images = {key: data for key, data in files.items() if key.endswith(".jpg")}

    zero_byte = [key for key, data in images.items() if not data]
    assert zero_byte == [f"{plans[1].book_id}/003.jpg"]
    undecodable = []
    for key, data in images.items():
        try:
            Image.open(io.BytesIO(data)).load()
        except OSError:
            undecodable.append(key)
    assert sorted(undecodable) == sorted([f"{plans[2].book_id}/005.jpg", *zero_byte])

    first = plans[0].book_id
    assert f"{first}/001.ocr.json" not in files
    assert json.loads(files[f"{first}/002.ocr.json"]) == {"OCRResult": ""}
    malformed = files[f"{first}/004.ocr.json"]
    with pytest.raises((ValueError, KeyError)):
        json.loads(malformed)["OCRResult"]

    page_counts = {book_id: sum(n.endswith(".jpg") for n in names) for book_id, names in _books(files).items()}
    table, rejects = labels_table(annotations, page_counts)
    assert sorted(rejects["reason"]) == ["book_missing", "range_out_of_book", "range_reversed"]
    assert rejects.loc[rejects["reason"] == "book_missing", "item"].tolist() == [plans[-1].book_id]
    assert plans[-1].book_id not in page_counts
    assert len(table) == sum(page_counts.values())


def test_ocr_words_depend_on_class(generated: Outputs) -> None:
    files, _ = generated
    plans = plan_books(CONFIG)
    ad_words = {"buy", "price", "coupon", "order", "mail"}
    share: dict[int, list[float]] = {}
    for plan in plans[:-1]:
        for page, label in enumerate(plan.labels):
            raw = files.get(f"{plan.book_id}/{plan.image_name(page)}.ocr.json")
            try:
                words = json.loads(raw)["OCRResult"].lower().split() if raw else []
            except (ValueError, KeyError):
                continue
            if words:
                share.setdefault(label, []).append(sum(w in ad_words for w in words) / len(words))
    mean = {label: sum(v) / len(v) for label, v in share.items()}
    assert mean[CLASS_INDEX["advertisement"]] > 3 * mean[CLASS_INDEX["story"]] > 0


def test_pipeline_writes_through_the_catalog(tmp_path: Path) -> None:
    catalog = DataCatalog(
        {
            "comic_books": ComicBookFolderDataset(filepath=tmp_path / "books"),
            "comic_annotations": MemoryDataset(),
            "params:demo_data": MemoryDataset({"seed": 3, "num_books": 16, "long_book_pages": 520}),
        }
    )
    SequentialRunner().run(create_pipeline().only_nodes("generate_comic_books"), catalog)
    books = catalog.load("comic_books")
    assert len(books) == 16
    longest = max(books.values(), key=len)
    assert longest.num_pages == 520 and [p.page_index for p in longest.pages] == list(range(520))
    assert {record["hash_code"] for record in catalog.load("comic_annotations")} >= set(books)
