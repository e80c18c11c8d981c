"""Nodes of the page-stream segmentation pipelines (pure functions: data and parameters in, data out)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from multimodal_suite.common.comics.annotations import CLASS_NAMES, IGNORE_LABEL, NUM_CLASSES, labels_table
from multimodal_suite.common.comics.books import ComicBook
from multimodal_suite.common.device import autocast_context, autocast_dtype, pick_device
from multimodal_suite.common.embeddings import EmbeddingTable
from multimodal_suite.common.encoding import encode_images, encode_texts
from multimodal_suite.common.hashing import content_key
from multimodal_suite.common.models import load_model
from multimodal_suite.common.params import from_params
from multimodal_suite.common.paths import component_problem
from multimodal_suite.common.rejects import Rejects, combine_rejects
from multimodal_suite.common.training import (
    BestCheckpoint,
    EarlyStopping,
    fit,
    history_metrics,
    loss_curve_figure,
    optimizer_step,
    warmup_schedule,
)
from multimodal_suite.models.bookbert import (
    BookBERTConfig,
    BookBERTMultimodal2,
    build_page_features,
    classify_sequences,
)

from .metrics import book_strip_figure, confusion_matrix_figure, evaluate_books
from .params import BaselineParams, ClassifyParams, ModelParams, PrecomputeParams, SplitParams, TrainParams

logger = logging.getLogger(__name__)

PROB_COLUMNS = [f"prob_{name}" for name in CLASS_NAMES]
# Validation during training sees whole books up to the model's position limit, windows of half that past it.
_VALIDATION_INFERENCE = ClassifyParams(window=None, stride=None)


# ----------------------------------------------------------------------------------------------------------------
# pss_precompute
# ----------------------------------------------------------------------------------------------------------------


def _nothing_indexed(comic_books: Mapping[str, ComicBook], book_ids: list[str], rejects: Rejects,
                     book_source: str) -> str:
    """Why no page at all was indexed, naming the folder (or annotation file) to fix."""
    folder = "the comic_books folder (catalog entry comic_books: $PSS_ROOT, default data/01_raw/comic_books)"
    fix = "point PSS_ROOT at your books, or generate samples with `kedro run --pipeline demo_data --env demo`"
    if not comic_books:
        return f"no pages to index: {folder} holds no book folders; {fix}"
    if not book_ids:
        return ("no pages to index: the annotation file (catalog entry comic_annotations: "
                "$PSS_DATA/comic_annotations.json) lists no books; fix it, or set pss.precompute.book_source: scan")
    reasons = pd.Series([row["reason"] for row in rejects.rows], dtype=object).value_counts().to_dict()
    listed = "the annotations list" if book_source == "annotations" else "on disk"
    return (f"no pages to index: {folder} holds {len(comic_books)} book folders, but none of the {len(book_ids)} "
            f"books {listed} has a page image there (problems: {reasons or 'none; the folders hold no images'}); "
            f"{fix}")


def index_pages(
    comic_books: Mapping[str, ComicBook], comic_annotations: list[dict],
    params: Mapping[str, Any] | PrecomputeParams,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """List every page of every book in numeric page order with its content keys.

    Books come from the annotation file (``book_source: annotations``) or from the folders on disk (``scan``).
    Each page gets an image key (image bytes + image model spec) and a text key (OCR text + text model spec), so
    a changed page, OCR file or model recomputes exactly what it affects.

    Args:
        comic_books: book folders from ``ComicBookFolderDataset``.
        comic_annotations: CoSMo-format annotation records.
        params: ``pss.precompute`` parameters (``book_source``, ``image_model``, ``text_model``).

    Returns:
        The page index (book_id, page_index, image_name, image_key, text_key, ocr_text, ocr_problem) and the
        rejects of listing (missing book folders, missing or malformed OCR).
    """
    params = from_params(PrecomputeParams, params, "pss.precompute")
    rejects = Rejects(stage="pss_precompute")
    if params.book_source == "annotations":
        book_ids = list(dict.fromkeys(str(record.get("hash_code", "")) for record in comic_annotations))
    else:
        book_ids = sorted(comic_books)
    image_spec_hash = params.image_model.spec_hash
    text_spec_hash = params.text_model.spec_hash

    rows: list[dict[str, Any]] = []
    for book_id in tqdm(book_ids, desc="index books", unit="book", leave=False):
        unsafe = component_problem(book_id)
        if unsafe is not None:
            # a book id names one folder under the books folder; anything else could reach outside it
            rejects.add(f"book {book_id!r}", "book_id_unsafe",
                        f"hash_code {unsafe}, not one folder name; fix it in the annotation file")
            continue
        book = comic_books.get(book_id)
        if book is None:
            rejects.add(f"book {book_id}", "book_missing", "listed in the annotations but no folder on disk")
            continue
        for page in book.pages:
            try:
                image_bytes = page.read_image_bytes()
            except OSError as error:
                image_bytes = b""
                rejects.add(f"page {page.page_index} of book {book_id}", "image_unreadable", str(error))
            text, problem = page.read_ocr()
            if problem:
                rejects.add(f"page {page.page_index} of book {book_id}", problem, "embedded with empty text",
                            log=False)
            rows.append({
                "book_id": book_id,
                "page_index": page.page_index,
                "image_name": page.image_path.rsplit("/", 1)[-1],
                "image_key": content_key("image", image_bytes, image_spec_hash),
                "text_key": content_key("text", text, text_spec_hash),
                "ocr_text": text,
                "ocr_problem": problem or "",
            })
    if not rows:
        raise ValueError(_nothing_indexed(comic_books, book_ids, rejects, params.book_source))
    index = pd.DataFrame(rows, columns=["book_id", "page_index", "image_name", "image_key", "text_key", "ocr_text",
                                        "ocr_problem"])
    ocr_problems = int((index["ocr_problem"] != "").sum())
    logger.info("Indexed %d pages of %d books (%d books missing, %d pages with OCR problems embedded as empty text)",
                len(index), index["book_id"].nunique(), len(book_ids) - index["book_id"].nunique(), ocr_problems)
    return index, rejects.to_frame()


def _check_dim(name: str, got: int, expected: int | None) -> None:
    if expected and int(expected) != got:
        raise ValueError(
            f"{name} model gives {got}-d embeddings but the configuration expects {expected} "
            f"(PSS_VIS_DIM / PSS_TXT_DIM or pss.precompute.expected_*_dim); fix the setting or the model"
        )


def _pending(index: pd.DataFrame, key_column: str, cached) -> pd.DataFrame:
    """Unique keys of ``index`` not yet in the cached shards (first page that has each key)."""
    unique = index.drop_duplicates(key_column)
    return unique[unique[key_column].isin(cached.missing(unique[key_column]))]


def _chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), max(1, size)):
        yield frame.iloc[start : start + size]


def embed_page_images(
    comic_books: Mapping[str, ComicBook],
    pss_page_index: pd.DataFrame,
    page_image_embeddings_cache,
    params: Mapping[str, Any] | PrecomputeParams,
) -> Iterator[EmbeddingTable]:
    """Embed the page images whose key is not cached yet, yielding one shard part per ``part_size`` pages.

    An undecodable image still gets a row (zero vector, ``decode_error`` set) so page indices never shift and the
    rejects report can name it. A rerun computes only new keys; killing the run loses only the part in flight.

    ``engine`` picks where the model runs: ``in_process`` (default: this process, decode threads ahead of the
    model) or ``ray_data`` (a Ray Data actor pool of ``ray.num_replicas`` model replicas, each asking for
    ``ray.num_gpus_per_replica`` GPUs and ``ray.num_cpus_per_replica`` CPUs, on the cluster at ``ray.address`` /
    ``RAY_ADDRESS`` or a local Ray). Both give the same rows and failures.
    """
    params = from_params(PrecomputeParams, params, "pss.precompute")
    todo = _pending(pss_page_index, "image_key", page_image_embeddings_cache)
    reused = pss_page_index["image_key"].nunique() - len(todo)
    if todo.empty:
        logger.info("Page images: all %d keys cached, nothing to compute", reused)
        yield EmbeddingTable.empty(page_image_embeddings_cache.dim or 0)
        return
    chunks = list(_chunks(todo, params.part_size))

    def loaders_of(chunk: pd.DataFrame) -> list:
        return [comic_books[b].page(p).read_image_bytes for b, p in zip(chunk["book_id"], chunk["page_index"])]

    if params.engine == "ray_data":
        # Imported here: only this engine needs Ray (and Ray Data), which the other engines need not load.
        from multimodal_suite.common.ray_encoding import iter_encode_images_ray

        spec_hash = params.image_model.spec_hash
        # One actor pool for all pages (each replica loads the model once); parts come back in order.
        results = iter_encode_images_ray(
            params.image_model,
            [load for chunk in chunks for load in loaders_of(chunk)],
            part_size=len(chunks[0]),
            options=params.ray,
            batch_size=params.batch_size,
            decode_workers=params.decode_workers,
            mixed_precision=params.mixed_precision,
            device=params.device,
            max_image_pixels=params.max_image_pixels,
        )
    else:
        loaded = load_model(params.image_model)
        _check_dim("image", loaded.output_dim, params.expected_visual_dim)
        spec_hash = loaded.spec_hash
        results = (
            encode_images(loaded, loaders_of(chunk), batch_size=params.batch_size, device=params.device,
                          mixed_precision=params.mixed_precision, num_workers=params.decode_workers, progress=None,
                          max_image_pixels=params.max_image_pixels)
            for chunk in chunks
        )
    started, failed = time.perf_counter(), 0  # the Ray engine starts (Ray, replicas) on the first part asked for
    bar = tqdm(total=len(todo), desc="embed page images", unit="page")
    for result, chunk in zip(results, chunks):  # results first: the Ray engine shuts down once it is exhausted
        _check_dim("image", result.embeddings.shape[1], params.expected_visual_dim)
        failed += len(result.failures)
        rows = chunk[["image_key", "book_id", "page_index"]].rename(columns={"image_key": "key"}).reset_index(drop=True)
        rows["decode_error"] = [result.failures.get(i, "") for i in range(len(rows))]
        bar.update(len(chunk))
        yield EmbeddingTable(result.embeddings, rows, model_spec_hash=spec_hash)
    bar.close()
    elapsed = time.perf_counter() - started
    logger.info("Page images: %d computed (%.1f pages/s), %d reused, %d undecodable (zero vector, flagged)",
                len(todo), len(todo) / max(elapsed, 1e-9), reused, failed)


def embed_page_texts(
    pss_page_index: pd.DataFrame, page_text_embeddings_cache, params: Mapping[str, Any] | PrecomputeParams
) -> Iterator[EmbeddingTable]:
    """Embed the OCR text of pages whose text key is not cached yet, one shard part per ``part_size`` pages."""
    params = from_params(PrecomputeParams, params, "pss.precompute")
    todo = _pending(pss_page_index, "text_key", page_text_embeddings_cache)
    reused = pss_page_index["text_key"].nunique() - len(todo)
    if todo.empty:
        logger.info("Page texts: all %d keys cached, nothing to compute", reused)
        yield EmbeddingTable.empty(page_text_embeddings_cache.dim or 0)
        return
    loaded = load_model(params.text_model)
    _check_dim("text", loaded.output_dim, params.expected_text_dim)
    started = time.perf_counter()
    bar = tqdm(total=len(todo), desc="embed page texts", unit="page")
    for chunk in _chunks(todo, params.part_size):
        result = encode_texts(loaded, list(chunk["ocr_text"]), batch_size=params.text_batch_size,
                              max_batch_tokens=params.text_max_batch_tokens, device=params.device, progress=None)
        rows = chunk[["text_key", "book_id", "page_index"]].rename(columns={"text_key": "key"}).reset_index(drop=True)
        bar.update(len(chunk))
        yield EmbeddingTable(result.embeddings, rows, model_spec_hash=loaded.spec_hash)
    bar.close()
    elapsed = time.perf_counter() - started
    logger.info("Page texts: %d computed (%.1f pages/s), %d reused", len(todo), len(todo) / max(elapsed, 1e-9), reused)


def report_precompute_rejects(
    pss_listing_rejects: pd.DataFrame, pss_page_index: pd.DataFrame, page_image_embeddings
) -> pd.DataFrame:
    """All skipped or degraded items of precompute: listing problems plus pages whose image did not decode.

    Image failures are read back from the shard rows, so a rerun that reuses cached vectors still reports them.
    """
    rejects = Rejects(stage="pss_precompute")
    if len(page_image_embeddings):
        errors = page_image_embeddings.rows.set_index("key")["decode_error"]
        errors = errors[errors.astype(str) != ""]
        failed = pss_page_index[pss_page_index["image_key"].isin(errors.index)]
        for row in failed.itertuples():
            rejects.add(f"page {row.page_index} of book {row.book_id}", "image_undecodable",
                        f"{errors[row.image_key]}; kept in the sequence with a zero image vector")
    report = combine_rejects(pss_listing_rejects, rejects.to_frame())
    logger.info("pss_precompute rejects: %s", report["reason"].value_counts().to_dict() if len(report) else "none")
    return report


# ----------------------------------------------------------------------------------------------------------------
# sequences, labels and splits
# ----------------------------------------------------------------------------------------------------------------


def assemble_book_sequences(
    pss_page_index: pd.DataFrame, page_image_embeddings, page_text_embeddings
) -> dict[str, dict[str, Any]]:
    """Per book, the model input of its pages in page order.

    Returns:
        ``{book_id: {"page_index": int64 [L], "features": float32 tensor [L, text_dim + visual_dim],
        "missing_image": bool [L]}}``.
    """
    decode_errors = page_image_embeddings.rows.set_index("key")["decode_error"] if len(page_image_embeddings) else {}
    sequences: dict[str, dict[str, Any]] = {}
    for book_id, pages in pss_page_index.sort_values(["book_id", "page_index"]).groupby("book_id", sort=True):
        visual = page_image_embeddings.get(list(pages["image_key"]))
        text = page_text_embeddings.get(list(pages["text_key"]))
        missing = np.array([bool(decode_errors.get(key, "")) for key in pages["image_key"]], dtype=bool)
        sequences[str(book_id)] = {
            "page_index": pages["page_index"].to_numpy(dtype=np.int64),
            "features": build_page_features(text, visual),
            "missing_image": missing,
        }
    logger.info("Assembled %d book sequences (%d pages)", len(sequences), len(pss_page_index))
    return sequences


def build_page_labels(
    comic_annotations: list[dict], pss_page_index: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-page labels from the annotations, with each book's length taken from its image files."""
    page_counts = pss_page_index.groupby("book_id")["page_index"].max().add(1).astype(int).to_dict()
    labels, rejects = labels_table(comic_annotations, page_counts)
    return labels, rejects


def split_books(page_labels: pd.DataFrame, params: Mapping[str, Any] | SplitParams) -> pd.DataFrame:
    """Assign every labelled book to train/val/test by a seeded shuffle (whole books, never pages).

    Args:
        page_labels: per-page labels (book_id, page_index, label).
        params: ``pss.split`` with ``seed``, ``val_fraction``, ``test_fraction``.

    Returns:
        A table of book_id, split.
    """
    params = from_params(SplitParams, params, "pss.split")
    books = sorted(page_labels.loc[page_labels["label"] != IGNORE_LABEL, "book_id"].unique())
    rng = np.random.default_rng(params.seed)
    order = [books[i] for i in rng.permutation(len(books))]
    n_test = max(1, round(len(books) * params.test_fraction))
    n_val = max(1, round(len(books) * params.val_fraction))
    if len(books) < 3:
        raise ValueError(f"need at least 3 labelled books to split into train/val/test, got {len(books)}")
    split = ["test"] * n_test + ["val"] * n_val + ["train"] * (len(books) - n_test - n_val)
    table = pd.DataFrame({"book_id": order, "split": split}).sort_values("book_id").reset_index(drop=True)
    logger.info("Book split: %s", table["split"].value_counts().to_dict())
    return table


def _labels_for(sequences: Mapping[str, dict], page_labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """Labels aligned to each sequence's pages (−1 where a page has no label)."""
    by_book = {book: frame.set_index("page_index")["label"] for book, frame in page_labels.groupby("book_id")}
    aligned = {}
    for book_id, sequence in sequences.items():
        labels = by_book.get(book_id)
        if labels is None:
            aligned[book_id] = np.full(len(sequence["page_index"]), IGNORE_LABEL, dtype=np.int64)
        else:
            aligned[book_id] = labels.reindex(sequence["page_index"]).fillna(IGNORE_LABEL).to_numpy(dtype=np.int64)
    return aligned


def _books_in(split: pd.DataFrame, name: str, sequences: Mapping[str, Any]) -> list[str]:
    return [book for book in split.loc[split["split"] == name, "book_id"] if book in sequences]


# ----------------------------------------------------------------------------------------------------------------
# pss_train
# ----------------------------------------------------------------------------------------------------------------


def _class_weights(labels: list[np.ndarray]) -> torch.Tensor:
    """Inverse-frequency weights over the training pages (classes absent from train weigh 1)."""
    counts = np.bincount(np.concatenate([l[l >= 0] for l in labels]), minlength=NUM_CLASSES).astype(np.float64)
    present = counts > 0
    weights = np.ones(NUM_CLASSES)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def _pad_batch(items: list[tuple[torch.Tensor, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad variable-length books into [B, L, D] features, [B, L] labels (−1 pad) and a [B, L] padding mask."""
    length = max(features.shape[0] for features, _ in items)
    dim = items[0][0].shape[1]
    features = torch.zeros((len(items), length, dim))
    labels = torch.full((len(items), length), IGNORE_LABEL, dtype=torch.long)
    mask = torch.ones((len(items), length), dtype=torch.bool)
    for row, (book_features, book_labels) in enumerate(items):
        n = book_features.shape[0]
        features[row, :n] = book_features
        labels[row, :n] = torch.as_tensor(np.array(book_labels, dtype=np.int64))
        mask[row, :n] = False
    return features, labels, mask


def _random_window(features: torch.Tensor, labels: np.ndarray, window: int, rng: np.random.Generator):
    if features.shape[0] <= window:
        return features, labels
    start = int(rng.integers(0, features.shape[0] - window + 1))
    return features[start : start + window], labels[start : start + window]


def _book_logits(
    model: BookBERTMultimodal2, sequences: Mapping[str, dict], book_ids: list[str], params: ClassifyParams
) -> dict[str, torch.Tensor]:
    """Float32 CPU logits [L, C] per book, whole books as context (windows only past the position limit)."""
    device = pick_device(params.device)
    model.eval().to(device)
    with autocast_context(device, autocast_dtype(device, params.mixed_precision)):
        all_logits = classify_sequences(
            model, [sequences[book_id]["features"].to(device) for book_id in book_ids], window=params.window,
            stride=params.stride, batch_windows=params.batch_windows, max_batch_pages=params.max_batch_pages)
    model.cpu()
    return {book_id: logits.float().cpu() for book_id, logits in zip(book_ids, all_logits)}


def predict_books(
    model: BookBERTMultimodal2, sequences: Mapping[str, dict], book_ids: list[str], params: ClassifyParams
) -> dict[str, np.ndarray]:
    """Class probabilities [L, C] per book, whole books as context (windows only past the position limit)."""
    return {book_id: torch.softmax(logits, dim=-1).numpy()
            for book_id, logits in _book_logits(model, sequences, book_ids, params).items()}


def _macro_f1(labels: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray | torch.Tensor]) -> float:
    """Page macro-F1 of the argmax of per-book ``scores`` [L, C] (probabilities or logits)."""
    true = np.concatenate([labels[b] for b in scores])
    pred = np.concatenate([np.asarray(scores[b]).argmax(-1) for b in scores])
    keep = true != IGNORE_LABEL
    return float(f1_score(true[keep], pred[keep], average="macro")) if keep.any() else 0.0


def _loss_on(logits: Mapping[str, torch.Tensor], labels: Mapping[str, np.ndarray], loss_fn) -> float:
    """Mean loss of whole books from their ``logits`` [L, C], each book weighted by its labelled pages."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for book, book_logits in logits.items():
            target = torch.as_tensor(np.array(labels[book], dtype=np.int64))
            valid = int((target != IGNORE_LABEL).sum())
            if valid:
                total += float(loss_fn(book_logits, target)) * valid
                count += valid
    return total / max(count, 1)


def train_bookbert(
    pss_book_sequences: Mapping[str, dict],
    page_labels: pd.DataFrame,
    pss_book_split: pd.DataFrame,
    page_text_embeddings,
    model_params: Mapping[str, Any] | ModelParams,
    train_params: Mapping[str, Any] | TrainParams,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, list[dict[str, float]]], Figure]:
    """Train BookBERT on the train books, early-stop on val loss, keep the checkpoint with the best val macro-F1.

    AdamW with linear warm-up then cosine (or inverse-sqrt) decay, gradient clipping, class-weighted cross entropy
    ignoring −1 pages. Books longer than the position limit train on random windows; validation (loss and
    macro-F1) reads whole val books, in the overlapping windows classification uses.

    Returns:
        The trained model (``{"config", "state_dict", "metadata"}`` for the safetensors model dataset), the
        per-epoch history table, the same history as MLflow metrics and a loss-curve figure.
    """
    model_params = from_params(ModelParams, model_params, "pss.model")
    train_params = from_params(TrainParams, train_params, "pss.train")
    torch.manual_seed(train_params.seed)
    rng = np.random.default_rng(train_params.seed)
    labels = _labels_for(pss_book_sequences, page_labels)
    train_books = _books_in(pss_book_split, "train", pss_book_sequences)
    val_books = _books_in(pss_book_split, "val", pss_book_sequences)
    total_dim = next(iter(pss_book_sequences.values()))["features"].shape[1]
    text_dim = int(page_text_embeddings.dim)
    config = BookBERTConfig(**asdict(model_params), text_dim=text_dim, visual_dim=total_dim - text_dim)
    model = BookBERTMultimodal2(config)
    device = pick_device(train_params.device)
    model.to(device)

    loss_fn = torch.nn.CrossEntropyLoss(weight=_class_weights([labels[b] for b in train_books]).to(device),
                                        ignore_index=IGNORE_LABEL)
    epochs, books_per_batch = train_params.epochs, train_params.books_per_batch
    steps_per_epoch = math.ceil(len(train_books) / books_per_batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_params.learning_rate,
                                  weight_decay=train_params.weight_decay)
    scheduler = warmup_schedule(optimizer, warmup_steps=train_params.warmup_steps,
                                total_steps=epochs * steps_per_epoch, schedule=train_params.schedule)
    window = config.max_positions

    def train_epoch(epoch: int) -> dict[str, float]:
        model.train()
        order = rng.permutation(len(train_books))
        epoch_loss, batches = 0.0, 0
        for first in range(0, len(order), books_per_batch):
            items = [_random_window(pss_book_sequences[train_books[i]]["features"], labels[train_books[i]], window, rng)
                     for i in order[first : first + books_per_batch]]
            features, targets, mask = (t.to(device) for t in _pad_batch(items))
            logits = model(features, padding_mask=mask)
            loss = loss_fn(logits.reshape(-1, config.num_classes), targets.reshape(-1))
            optimizer_step(loss, optimizer, model.parameters(), max_grad_norm=train_params.grad_clip,
                           scheduler=scheduler)
            epoch_loss += loss.item()
            batches += 1
        return {"train_loss": epoch_loss / max(batches, 1)}

    def evaluate(epoch: int) -> dict[str, float]:
        # whole books, windowed as classification windows them: loss and F1 come from the same logits
        logits = _book_logits(model, pss_book_sequences, val_books, _VALIDATION_INFERENCE)
        val_loss = _loss_on(logits, labels, loss_fn.cpu())
        val_f1 = _macro_f1(labels, logits)
        model.to(device)
        loss_fn.to(device)
        return {"val_loss": val_loss, "val_macro_f1": val_f1}

    result = fit(epochs=epochs, train_epoch=train_epoch, evaluate=evaluate, model=model, optimizer=optimizer,
                 early_stopping=EarlyStopping("val_loss", patience=train_params.patience, min_delta=1e-4),
                 checkpoint=BestCheckpoint("val_macro_f1", mode="max"), desc="train BookBERT")
    logger.info("BookBERT: best val macro-F1 %.3f at epoch %d of %d run", result.best_value, result.best_epoch,
                result.epochs_run)
    trained = {
        "config": config.to_dict(),
        "state_dict": result.best_state,
        "metadata": {"best_epoch": result.best_epoch, "best_val_macro_f1": result.best_value,
                     "class_names": list(CLASS_NAMES), "train_books": len(train_books), "val_books": len(val_books)},
    }
    metrics = history_metrics(result.history, ("train_loss", "val_loss", "val_macro_f1"))
    figure = loss_curve_figure(result.history, result.best_epoch, metric="val_macro_f1", metric_label="val macro-F1",
                               title="BookBERT training")
    return trained, result.history, metrics, figure


def load_bookbert(bookbert_model: Mapping[str, Any]) -> BookBERTMultimodal2:
    """Rebuild the module from the saved config and weights."""
    model = BookBERTMultimodal2(BookBERTConfig.from_dict(bookbert_model["config"]))
    model.load_state_dict(bookbert_model["state_dict"])
    return model.eval()


def train_page_baseline(
    pss_book_sequences: Mapping[str, dict], page_labels: pd.DataFrame, pss_book_split: pd.DataFrame,
    params: Mapping[str, Any] | BaselineParams,
) -> pd.DataFrame:
    """Single-page baseline: logistic regression on the same page features, no context; predicts every page."""
    params = from_params(BaselineParams, params, "pss.baseline")
    labels = _labels_for(pss_book_sequences, page_labels)
    train_books = _books_in(pss_book_split, "train", pss_book_sequences)
    features = np.concatenate([pss_book_sequences[b]["features"].numpy() for b in train_books])
    targets = np.concatenate([labels[b] for b in train_books])
    keep = targets != IGNORE_LABEL
    classifier = make_pipeline(StandardScaler(), LogisticRegression(
        C=params.C, max_iter=params.max_iter, class_weight="balanced"))
    classifier.fit(features[keep], targets[keep])
    probabilities = {}
    for book_id, sequence in pss_book_sequences.items():
        proba = np.zeros((len(sequence["page_index"]), NUM_CLASSES))
        proba[:, classifier.classes_] = classifier.predict_proba(sequence["features"].numpy())
        probabilities[book_id] = proba
    return _prediction_table(pss_book_sequences, probabilities)


# ----------------------------------------------------------------------------------------------------------------
# pss_classify and evaluation
# ----------------------------------------------------------------------------------------------------------------


def _prediction_table(sequences: Mapping[str, dict], probabilities: Mapping[str, np.ndarray]) -> pd.DataFrame:
    frames = []
    for book_id, proba in probabilities.items():
        frame = pd.DataFrame(proba.astype(np.float32), columns=PROB_COLUMNS)
        frame.insert(0, "book_id", book_id)
        frame.insert(1, "page_index", sequences[book_id]["page_index"])
        labels = proba.argmax(-1)
        frame.insert(2, "label", labels.astype(np.int64))
        frame.insert(3, "label_name", [CLASS_NAMES[i] for i in labels])
        frames.append(frame)
    columns = ["book_id", "page_index", "label", "label_name", *PROB_COLUMNS]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def classify_books(
    bookbert_model: Mapping[str, Any], pss_book_sequences: Mapping[str, dict],
    params: Mapping[str, Any] | ClassifyParams,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Label every page of every book (any length) with BookBERT.

    Returns:
        A per-page table (book_id, page_index, label, label_name, prob_<class>...) and per-book JSON
        ``{book_id: {"num_pages", "pages": [{"page_index", "label", "probabilities": {class: p}}]}}``.
    """
    params = from_params(ClassifyParams, params, "pss.classify")
    model = load_bookbert(bookbert_model)
    started = time.perf_counter()
    probabilities = predict_books(model, pss_book_sequences, sorted(pss_book_sequences), params)
    elapsed = time.perf_counter() - started
    table = _prediction_table(pss_book_sequences, probabilities)
    logger.info("Classified %d pages of %d books in %.2f s (%.3f ms/page)", len(table), len(probabilities), elapsed,
                1000 * elapsed / max(len(table), 1))
    per_book: dict[str, Any] = {}
    for book_id, proba in probabilities.items():
        page_indices = pss_book_sequences[book_id]["page_index"]
        per_book[str(book_id)] = {
            "num_pages": int(len(page_indices)),
            "pages": [
                {"page_index": int(page), "label": CLASS_NAMES[int(row.argmax())],
                 "probabilities": dict(zip(CLASS_NAMES, np.round(row.astype(float), 5).tolist()))}
                for page, row in zip(page_indices, proba)
            ],
        }
    return table, per_book


def _books_for_eval(predictions: pd.DataFrame, labels: Mapping[str, np.ndarray], sequences, books: list[str]):
    by_book = {book: frame.set_index("page_index")["label"] for book, frame in predictions.groupby("book_id")}
    return {book: (labels[book], by_book[book].reindex(sequences[book]["page_index"]).to_numpy()) for book in books}


def evaluate_pss(
    bookbert_model: Mapping[str, Any],
    pss_book_sequences: Mapping[str, dict],
    page_labels: pd.DataFrame,
    pss_book_split: pd.DataFrame,
    baseline_page_predictions: pd.DataFrame,
    params: Mapping[str, Any] | ClassifyParams,
) -> tuple[dict[str, Any], pd.DataFrame, Figure, Figure]:
    """Evaluate BookBERT and the single-page baseline on the test books with the published metric definitions.

    Returns:
        The evaluation report (``{"bookbert": {...}, "baseline": {...}, "test_books": n}``), the per-class table
        of both models, the confusion-matrix figure and the per-book strip plot of BookBERT.
    """
    params = from_params(ClassifyParams, params, "pss.classify")
    labels = _labels_for(pss_book_sequences, page_labels)
    test_books = _books_in(pss_book_split, params.split, pss_book_sequences)
    model = load_bookbert(bookbert_model)
    predictions = _prediction_table(pss_book_sequences, predict_books(model, pss_book_sequences, test_books, params))
    report: dict[str, Any] = {"split": params.split, "test_books": len(test_books)}
    per_class_tables = []
    evaluated = {}
    for name, table in (("bookbert", predictions), ("baseline", baseline_page_predictions)):
        books = _books_for_eval(table, labels, pss_book_sequences, test_books)
        summary, per_class, _ = evaluate_books(books, CLASS_NAMES)
        report[name] = summary
        per_class_tables.append(per_class.assign(model=name))
        evaluated[name] = books
    for key in ("macro_f1", "pq", "accuracy", "mndd_cosmo"):
        logger.info("test %-10s BookBERT %.3f | single-page baseline %.3f", key, report["bookbert"][key],
                    report["baseline"][key])
    true = np.concatenate([t for t, _ in evaluated["bookbert"].values()])
    pred = np.concatenate([p for _, p in evaluated["bookbert"].values()])
    keep = true != IGNORE_LABEL
    confusion = confusion_matrix_figure(true[keep], pred[keep], CLASS_NAMES, "BookBERT, test pages")
    strips = book_strip_figure(evaluated["bookbert"], CLASS_NAMES)
    return report, pd.concat(per_class_tables, ignore_index=True), confusion, strips


def evaluation_metrics(pss_evaluation: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Flatten the evaluation report into MLflow metrics (``bookbert.pq``, ``baseline.macro_f1`` ...)."""
    return {
        f"{model}.{name}": {"value": float(value), "step": 0}
        for model in ("bookbert", "baseline")
        for name, value in pss_evaluation[model].items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    }
