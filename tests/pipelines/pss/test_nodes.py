"""pss nodes on tiny sample books with tiny seeded models."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from multimodal_suite.common.params import ParamsError
from multimodal_suite.datasets import ComicBookFolderDataset, EmbeddingShardDataset
from multimodal_suite.models.bookbert import classify_sequence
from multimodal_suite.pipelines.pss import nodes
from multimodal_suite.pipelines.pss.params import ModelParams, TrainParams


def _books(root):
    return ComicBookFolderDataset(filepath=str(root)).load()


def _precompute(root, annotations, params, shard_dir):
    books = _books(root)
    index, listing_rejects = nodes.index_pages(books, annotations, params)
    images = EmbeddingShardDataset(filepath=str(shard_dir / "images"))
    texts = EmbeddingShardDataset(filepath=str(shard_dir / "texts"))
    for table in nodes.embed_page_images(books, index, images.load(), params):
        images.save(table)
    for table in nodes.embed_page_texts(index, texts.load(), params):
        texts.save(table)
    return books, index, listing_rejects, images, texts


@pytest.fixture(scope="module")
def precomputed(tiny_collection, precompute_params, tmp_path_factory):
    """Precomputed once per module; tests that write shards use their own directories."""
    root, annotations = tiny_collection
    params = precompute_params
    tmp_path = tmp_path_factory.mktemp("precomputed")
    return (annotations, params, tmp_path, *_precompute(root, annotations, params, tmp_path))


def test_index_lists_pages_in_numeric_order_and_reports_listing_problems(tiny_collection, precompute_params):
    root, annotations = tiny_collection
    books = _books(root)
    index, rejects = nodes.index_pages(books, annotations, precompute_params)
    for book_id, pages in index.groupby("book_id", sort=False):
        assert list(pages["page_index"]) == list(range(len(books[book_id].pages)))
    unpadded = [b for b, book in books.items() if any(p.image_path.endswith("/10.jpg") for p in book.pages)]
    assert unpadded, "the tiny collection has a book without zero padding"
    assert "book_missing" in set(rejects["reason"])
    assert {"ocr_missing", "ocr_malformed"} <= set(rejects["reason"])
    assert (index.loc[index["ocr_problem"] != "", "ocr_text"] == "").all()
    missing = rejects.loc[rejects["reason"] == "book_missing", "item"].str.split().str[-1]
    assert not set(missing) & set(index["book_id"])


def test_bad_pages_stay_in_sequence_with_a_flag_and_a_reject(precomputed):
    annotations, params, _, books, index, listing_rejects, images, texts = precomputed
    report = nodes.report_precompute_rejects(listing_rejects, index, images.load())
    undecodable = report[report["reason"] == "image_undecodable"]
    assert len(undecodable) == 2  # the zero-byte page and the truncated JPEG
    assert undecodable["detail"].str.contains("empty|truncated", regex=True).all()
    sequences = nodes.assemble_book_sequences(index, images.load(), texts.load())
    flagged = {(b, int(p)) for b, s in sequences.items() for p, m in zip(s["page_index"], s["missing_image"]) if m}
    assert len(flagged) == 2
    for book_id, page in flagged:
        sequence = sequences[book_id]
        assert len(sequence["page_index"]) == len(books[book_id].pages)  # indices never shift
        row = list(sequence["page_index"]).index(page)
        text_dim = texts.load().dim
        assert torch.all(sequence["features"][row, text_dim:] == 0)  # zero image vector
        assert torch.any(sequence["features"][row, :text_dim] != 0)  # its text is still embedded


def test_sequences_concatenate_text_then_visual(precomputed):
    _, _, _, _, index, _, images, texts = precomputed
    shards_i, shards_t = images.load(), texts.load()
    sequences = nodes.assemble_book_sequences(index, shards_i, shards_t)
    book_id = sorted(sequences)[0]
    pages = index[index["book_id"] == book_id].sort_values("page_index")
    features = sequences[book_id]["features"].numpy()
    np.testing.assert_array_equal(features[:, : shards_t.dim], shards_t.get(list(pages["text_key"])))
    np.testing.assert_array_equal(features[:, shards_t.dim :], shards_i.get(list(pages["image_key"])))


def test_rerun_computes_nothing_and_a_changed_page_recomputes_one(precomputed, tiny_collection):
    annotations, params, tmp_path, books, index, _, images, texts = precomputed
    assert list(nodes.embed_page_images(books, index, images.load(), params))[0].embeddings.shape[0] == 0
    changed = index.copy()
    changed.loc[3, "text_key"] = "0" * 32  # as if page 3's OCR text changed
    parts = list(nodes.embed_page_texts(changed, texts.load(), params))
    assert sum(len(p) for p in parts) == 1


def test_resume_after_an_interrupted_precompute(tiny_collection, precompute_params, tmp_path):
    root, annotations = tiny_collection
    books = _books(root)
    index, _ = nodes.index_pages(books, annotations, precompute_params)
    images = EmbeddingShardDataset(filepath=str(tmp_path / "images"))
    # the run is killed after its first part was saved
    for table in itertools.islice(nodes.embed_page_images(books, index, images.load(), precompute_params), 1):
        images.save(table)
    first = len(images.load())
    assert 0 < first < index["image_key"].nunique()
    for table in nodes.embed_page_images(books, index, images.load(), precompute_params):
        assert not set(table.rows["key"]) & set(images.load().keys)
        images.save(table)
    assert len(images.load()) == index["image_key"].nunique()


def test_train_classify_evaluate_on_tiny_books(precomputed):
    annotations, _, _, _, index, _, images, texts = precomputed
    sequences = nodes.assemble_book_sequences(index, images.load(), texts.load())
    labels, label_rejects = nodes.build_page_labels(annotations, index)
    assert {"range_out_of_book", "range_reversed"} <= set(label_rejects["reason"])
    split = nodes.split_books(labels, {"seed": 0, "val_fraction": 0.2, "test_fraction": 0.2})
    assert set(split["split"]) == {"train", "val", "test"}
    model_params = ModelParams(bert_input=32, num_layers=1, num_heads=2, ff_dim=64, dropout=0.1, max_positions=8)
    trained, history, metrics, figure = nodes.train_bookbert(
        sequences, labels, split, texts.load(), model_params,
        TrainParams(seed=0, epochs=3, books_per_batch=2, learning_rate=1e-3, warmup_steps=1, patience=5,
                    device="cpu"))
    assert len(history) == 3 and set(metrics) == {"train_loss", "val_loss", "val_macro_f1"}
    assert trained["config"]["text_dim"] == texts.load().dim
    table, per_book = nodes.classify_books(trained, sequences, {"window": 8, "stride": 4})
    assert len(table) == len(index)
    np.testing.assert_allclose(table[nodes.PROB_COLUMNS].sum(axis=1), 1.0, atol=1e-5)
    assert set(per_book) == set(sequences)
    assert per_book[sorted(per_book)[0]]["num_pages"] == len(sequences[sorted(per_book)[0]]["page_index"])
    baseline = nodes.train_page_baseline(sequences, labels, split, {"max_iter": 200})
    report, per_class, confusion, strips = nodes.evaluate_pss(trained, sequences, labels, split, baseline,
                                                              {"window": 8, "stride": 4})
    assert report["test_books"] == (split["split"] == "test").sum()
    for model in ("bookbert", "baseline"):
        assert 0.0 <= report[model]["accuracy"] <= 1.0 and report[model]["books_evaluated"] >= 1
    assert set(per_class["model"]) == {"bookbert", "baseline"}
    flat = nodes.evaluation_metrics(report)
    assert "bookbert.pq" in flat and "baseline.macro_f1" in flat


def test_wrong_class_count_is_a_clear_error(precomputed):
    annotations, _, _, _, index, _, images, texts = precomputed
    sequences = nodes.assemble_book_sequences(index, images.load(), texts.load())
    labels, _ = nodes.build_page_labels(annotations, index)
    split = nodes.split_books(labels, {"seed": 0})
    with pytest.raises(ValueError, match="PSS_NUM_CLASSES must be 9"):
        nodes.train_bookbert(sequences, labels, split, texts.load(), {"num_classes": 5}, {"epochs": 1})


def test_a_misspelled_or_mistyped_parameter_is_an_error_not_a_default(precomputed):
    annotations, _, _, _, index, _, images, texts = precomputed
    sequences = nodes.assemble_book_sequences(index, images.load(), texts.load())
    labels, _ = nodes.build_page_labels(annotations, index)
    split = nodes.split_books(labels, {"seed": 0})
    with pytest.raises(ParamsError, match=r"params:pss\.train.*'epoch' \(did you mean 'epochs'\?\).*valid keys"):
        nodes.train_bookbert(sequences, labels, split, texts.load(), {}, {"epoch": 3})
    with pytest.raises(ParamsError, match=r"params:pss\.split: 'seed' must be an integer, got '0'"):
        nodes.split_books(labels, {"seed": "0"})
    with pytest.raises(ParamsError, match=r"'schedule' must be 'cosine' or 'inverse_sqrt', got 'linear'"):
        nodes.train_bookbert(sequences, labels, split, texts.load(), {}, {"schedule": "linear"})


def test_model_dimension_check_names_the_setting(tiny_collection, precompute_params, tmp_path):
    root, annotations = tiny_collection
    books = _books(root)
    index, _ = nodes.index_pages(books, annotations, precompute_params)
    params = dict(precompute_params, expected_visual_dim=1152)
    with pytest.raises(ValueError, match="PSS_VIS_DIM"):
        next(nodes.embed_page_images(books, index, EmbeddingShardDataset(filepath=str(tmp_path / "i")).load(),
                                     params))


UNSAFE_BOOK_IDS = ["..", "../outside", "/abs", "a/b", "a\\b", ""]


def test_a_book_id_that_is_not_one_folder_name_is_a_reject_and_the_other_books_are_indexed(
        tiny_collection, precompute_params):
    root, annotations = tiny_collection
    books = _books(root)
    crafted = annotations + [{**annotations[0], "hash_code": book_id} for book_id in UNSAFE_BOOK_IDS]
    index, rejects = nodes.index_pages(books, crafted, precompute_params)
    unsafe = rejects[rejects["reason"] == "book_id_unsafe"]
    assert sorted(unsafe["item"]) == sorted(f"book {book_id!r}" for book_id in UNSAFE_BOOK_IDS)
    assert unsafe["detail"].str.contains("annotation file").all()
    assert not set(UNSAFE_BOOK_IDS) & set(index["book_id"])
    assert set(index["book_id"]) == set(nodes.index_pages(books, annotations, precompute_params)[0]["book_id"])


@pytest.mark.parametrize("book_source", ["annotations", "scan"])
def test_an_empty_books_folder_is_an_error_naming_the_folder(tiny_collection, precompute_params, tmp_path,
                                                             book_source):
    _, annotations = tiny_collection
    (tmp_path / "books").mkdir()
    params = dict(precompute_params, book_source=book_source)
    with pytest.raises(ValueError, match=r"no pages to index: the comic_books folder .*PSS_ROOT.*no book folders"):
        nodes.index_pages(_books(tmp_path / "books"), annotations, params)


def test_books_none_of_which_the_annotations_list_is_an_error_with_the_counts(tiny_collection, precompute_params):
    root, annotations = tiny_collection
    others = [{**record, "hash_code": f"elsewhere{number}"} for number, record in enumerate(annotations)]
    with pytest.raises(ValueError, match=rf"none of the {len(others)} books the annotations list .*'book_missing': "
                                         rf"{len(others)}"):
        nodes.index_pages(_books(root), others, precompute_params)


def _val_loss_with_long_val_book(labels_past_the_window: bool) -> tuple[float, dict, dict, pd.DataFrame]:
    """One epoch on a 40-page train book; the val book has 600 pages, labelled past page 512 or not."""
    generator = torch.Generator().manual_seed(0)
    lengths = {"train_book": 40, "val_book": 600}
    sequences = {book: {"page_index": np.arange(n), "features": torch.randn(n, 8, generator=generator)}
                 for book, n in lengths.items()}
    labels = {"train_book": np.arange(40) % 3, "val_book": np.arange(600) // 100 % 3}
    if not labels_past_the_window:
        labels["val_book"][512:] = -1
    page_labels = pd.DataFrame([{"book_id": book, "page_index": page, "label": int(label)}
                                for book, book_labels in labels.items() for page, label in enumerate(book_labels)])
    split = pd.DataFrame({"book_id": ["train_book", "val_book"], "split": ["train", "val"]})
    trained, history, _, _ = nodes.train_bookbert(
        sequences, page_labels, split, SimpleNamespace(dim=4),
        ModelParams(bert_input=16, num_layers=1, num_heads=2, ff_dim=32, dropout=0.0),  # 512 positions
        TrainParams(seed=0, epochs=1, books_per_batch=1, warmup_steps=1, device="cpu"))
    return float(history["val_loss"].iloc[0]), trained, sequences, page_labels


def test_validation_loss_reads_whole_books_in_the_classification_windows():
    cut_loss, _, _, _ = _val_loss_with_long_val_book(labels_past_the_window=False)
    whole_loss, trained, sequences, page_labels = _val_loss_with_long_val_book(labels_past_the_window=True)
    assert whole_loss != pytest.approx(cut_loss)  # pages 512-599 count (the same model either way)
    # the loss of the logits classification gives the whole book (overlapping windows past 512 pages)
    model = nodes.load_bookbert(trained)
    logits = classify_sequence(model, sequences["val_book"]["features"])
    train_labels = page_labels.loc[page_labels["book_id"] == "train_book", "label"].to_numpy()
    loss_fn = torch.nn.CrossEntropyLoss(weight=nodes._class_weights([train_labels]), ignore_index=-1)
    target = torch.tensor(page_labels.loc[page_labels["book_id"] == "val_book", "label"].to_numpy())
    assert whole_loss == pytest.approx(float(loss_fn(logits, target)), rel=1e-5)
