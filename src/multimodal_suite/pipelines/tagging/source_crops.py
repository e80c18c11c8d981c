"""A tagged source collection (webdataset shards) → one table of crop embeddings per shard, in process.

Each sample is segmented, cut into crops in memory and embedded (:class:`~.crops.CropEmbedder`); only
the vectors and their metadata are kept. A shard's table has one row per crop:

``key`` (content hash of pipeline configuration, shard, sample key and crop id), ``shard``, ``sample_key``,
``crop_id``, ``bbox`` ([x, y, w, h]), ``area``, ``whole_image``, ``vlm_tags`` (the sample's image-level tags),
``has_tags`` (False when the sample had no readable tag file: kept, with empty tags), ``error`` ("" for crops),
``pipeline_hash``.

A sample that cannot be used (corrupt member, undecodable image, a member name that is not one file name, the lost
end of a truncated tar) becomes one row with ``crop_id`` −1, a zero vector and the reason in ``error``, so nothing
is dropped silently, the rejects report reads it back from the stored shards, and a rerun knows the shard was
finished. A sample read despite a problem (a malformed tag file or metadata member) has its crop rows and one such
row as well, whose reason says what it was kept without; a shard that is no tar archive is one such row under a
placeholder key (:func:`~multimodal_suite.common.webdataset_shards.is_shard_problem_key`). The Ray Data path
(:mod:`~.ray_source_crops`) produces the same tables.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from multimodal_suite.common.embeddings import EmbeddingTable
from multimodal_suite.common.hashing import content_key
from multimodal_suite.common.webdataset_shards import Sample, SampleProblem, WebDatasetShards, shard_problems

from .crops import CropEmbedder, CropResult

logger = logging.getLogger(__name__)

ROW_COLUMNS = ["key", "shard", "sample_key", "crop_id", "bbox", "area", "whole_image", "vlm_tags", "has_tags",
               "error", "pipeline_hash"]


def crop_key(pipeline_hash: str, shard: str, sample_key: str, crop_id: int) -> str:
    """Content key of one source crop's embedding."""
    return content_key("source_crop", pipeline_hash, shard, sample_key, str(int(crop_id)))


def sample_rows(
    shard: str,
    sample_key: str,
    tags: Sequence[str] | None,
    result: CropResult | str,
    pipeline_hash: str,
    dim: int,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows and vectors [n, dim] of one sample: one per crop, or one error row when ``result`` is a reason."""
    base = {"shard": shard, "sample_key": sample_key, "vlm_tags": list(tags or []), "has_tags": tags is not None,
            "pipeline_hash": pipeline_hash}
    if isinstance(result, str):
        row = {**base, "key": crop_key(pipeline_hash, shard, sample_key, -1), "crop_id": -1, "bbox": [0, 0, 0, 0],
               "area": 0, "whole_image": False, "error": result}
        return [row], np.zeros((1, dim), dtype=np.float32)
    rows = [{**base, "key": crop_key(pipeline_hash, shard, sample_key, crop.crop_id), "crop_id": crop.crop_id,
             "bbox": [int(v) for v in crop.bbox], "area": int(crop.area), "whole_image": bool(crop.whole_image),
             "error": ""} for crop, _ in result]
    vectors = np.stack([vector for _, vector in result]) if result else np.zeros((0, dim), np.float32)
    return rows, vectors.astype(np.float32, copy=False)


def rows_to_table(rows: list[dict[str, Any]], vectors: list[np.ndarray], dim: int, pipeline_hash: str
                  ) -> EmbeddingTable:
    """One shard's rows and vector blocks → an :class:`EmbeddingTable` (columns :data:`ROW_COLUMNS`)."""
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
    return EmbeddingTable(embeddings, frame, model_spec_hash=pipeline_hash)


def embed_shard(
    view: WebDatasetShards, shard: str, embedder: CropEmbedder, batch_images: int,
    progress: Callable[[int], None] | None = None,
) -> EmbeddingTable:
    """Stream one shard through ``embedder``, ``batch_images`` samples at a time → the shard's table."""
    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    problems: list[SampleProblem] = []
    batch: list[Sample] = []

    def flush() -> None:
        for sample, result in zip(batch, embedder.process([sample.image_bytes for sample in batch])):
            sample_rows_, sample_vectors = sample_rows(shard, sample.key, sample.tags, result,
                                                       embedder.pipeline_hash, embedder.dim)
            rows.extend(sample_rows_)
            vectors.append(sample_vectors)
        if progress is not None:
            progress(len(batch))
        batch.clear()

    seen: set[str] = set()
    for sample in view.iter_samples(shard, on_problem=problems.append):
        seen.add(sample.key)
        batch.append(sample)
        if len(batch) >= batch_images:
            flush()
    if batch:
        flush()
    for sample_key, reason in shard_problems(view, shard, problems, seen).items():
        problem_rows, problem_vectors = sample_rows(shard, sample_key, None, reason, embedder.pipeline_hash,
                                                    embedder.dim)
        rows.extend(problem_rows)
        vectors.append(problem_vectors)
    return rows_to_table(rows, vectors, embedder.dim, embedder.pipeline_hash)


def iter_source_tables(
    view: WebDatasetShards, shards: Sequence[str], embedder: CropEmbedder, batch_images: int
) -> Iterator[tuple[str, EmbeddingTable]]:
    """``(shard, table)`` for each of ``shards`` in order, with a progress bar over samples."""
    total = sum(view.parquet_num_rows(shard) or 0 for shard in shards) or None
    bar = tqdm(total=total, desc="segment + embed source", unit="sample")
    for shard in shards:
        started = time.perf_counter()
        table = embed_shard(view, shard, embedder, batch_images, progress=bar.update)
        logger.debug("%s: %d rows in %.1f s", shard, len(table), time.perf_counter() - started)
        yield shard, table
    bar.close()
