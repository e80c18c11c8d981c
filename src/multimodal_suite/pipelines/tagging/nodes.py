"""Nodes of the auto-tagging pipelines (pure functions: data and parameters in, data out).

``tagging_source`` segments and embeds a tagged source collection; ``tagging_index`` builds the FAISS index over
its crop embeddings; ``tagging_target`` segments one target folder, saves its crops, embeds them and tags every
image by kNN voting against the index.
"""
from __future__ import annotations

import io
import logging
import time
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from multimodal_suite.common.embeddings import EmbeddingTable
from multimodal_suite.common.faiss_index import IndexBundle
from multimodal_suite.common.hashing import content_key
from multimodal_suite.common.params import from_params
from multimodal_suite.common.rejects import Rejects
from multimodal_suite.common.vector_index import build_index, search_batched
from multimodal_suite.common.webdataset_shards import WebDatasetShards
from multimodal_suite.pipelines.tagging.crops import (
    CropEmbedder,
    CropEncoder,
    crop_pipeline_hash,
    decode_rgb,
    segment_images,
)
from multimodal_suite.pipelines.tagging.segmentation import build_segmenter
from multimodal_suite.pipelines.tagging.source_crops import iter_source_tables

from .params import BatchingParams, IndexParams, ModelsParams, SourceParams, TargetParams
from .reporting import contact_sheet
from .voting import tag_precision_recall, vote_crop_tags, vote_image_tags

logger = logging.getLogger(__name__)

Params = Mapping[str, Any]
"""A parameter section as Kedro passes it (``params:tagging.<section>``)."""


# ----------------------------------------------------------------------------------------------------------------
# tagging_source
# ----------------------------------------------------------------------------------------------------------------


def _finished_shards(cache, pipeline_hash: str) -> set[str]:
    if not len(cache):
        return set()
    rows = cache.rows
    return set(rows.loc[rows["pipeline_hash"] == pipeline_hash, "shard"].unique())


def embed_source_crops(
    tagging_source_shards: WebDatasetShards,
    source_crop_embeddings_cache,
    models: Params | ModelsParams,
    batching: Params | BatchingParams,
    source: Params | SourceParams,
) -> Iterator[EmbeddingTable]:
    """Segment every sample of the selected shards, embed its crops in memory, yield one shard part per shard.

    Shards ``source.start_shard`` (inclusive) to ``source.end_shard`` (exclusive) of the sorted shard list are
    processed; a shard already stored for this segmenter + model configuration is skipped, so an interrupted run
    resumes at the first unfinished shard. ``source.engine`` picks ``in_process`` or ``ray_data`` (an actor pool
    of ``source.ray.num_replicas`` segmenter + CLIP replicas). Unusable samples become error rows (see
    :mod:`multimodal_suite.pipelines.tagging.source_crops`).

    Args:
        tagging_source_shards: the source collection.
        source_crop_embeddings_cache: the stored crop embeddings (to skip finished shards).
        models: ``tagging.models`` parameters.
        batching: ``tagging.batching`` parameters.
        source: ``tagging.source`` parameters.

    Yields:
        One :class:`EmbeddingTable` per shard (an empty one when there is nothing to do).
    """
    models = from_params(ModelsParams, models, "tagging.models")
    batching = from_params(BatchingParams, batching, "tagging.batching")
    source = from_params(SourceParams, source, "tagging.source")
    view = tagging_source_shards.shard_range(source.start_shard, source.end_shard)
    pipeline_hash = crop_pipeline_hash(models.segmenter, models.clip_model)
    finished = _finished_shards(source_crop_embeddings_cache, pipeline_hash)
    todo = [shard for shard in view.shards if shard not in finished]
    logger.info("Source shards: %d selected, %d already embedded, %d to do", len(view), len(view) - len(todo),
                len(todo))
    if not todo:
        yield EmbeddingTable.empty(source_crop_embeddings_cache.dim or 0)
        return
    started = time.perf_counter()
    if source.engine == "ray_data":
        # Imported here: only this engine needs Ray (and Ray Data), which the other engine need not load.
        from multimodal_suite.pipelines.tagging.ray_source_crops import iter_source_tables_ray

        tables = iter_source_tables_ray(
            view, todo, models.segmenter, models.clip_model, options=source.ray,
            batch_images=batching.batch_images, batch_clips=batching.batch_clips,
            mixed_precision=source.mixed_precision, device=source.device)
    else:
        embedder = CropEmbedder(models.segmenter, models.clip_model, batch_clips=batching.batch_clips,
                                device=source.device, mixed_precision=source.mixed_precision)
        tables = iter_source_tables(view, todo, embedder, batching.batch_images)
    crops = samples = 0
    for shard, table in tables:
        ok = table.rows["error"] == ""
        shard_crops, unusable = int(ok.sum()), int((~ok).sum())
        shard_samples = table.rows.loc[ok, "sample_key"].nunique()
        crops += shard_crops
        samples += shard_samples + unusable
        logger.info("%s: %d crops of %d samples, %d unusable samples", shard, shard_crops, shard_samples, unusable)
        yield table
    elapsed = time.perf_counter() - started
    logger.info("Source: %d shards, %d samples, %d crops in %.1f s (%.1f samples/s, %.1f crops/s; engine %s)",
                len(todo), samples, crops, elapsed, samples / max(elapsed, 1e-9), crops / max(elapsed, 1e-9),
                source.engine)


def _usable_rows(shards) -> pd.DataFrame:
    """Rows of the stored crop embeddings that are crops (not error rows), with their global row number."""
    rows = shards.rows.reset_index(drop=True)
    rows["embedding_id"] = np.arange(len(rows), dtype=np.int64)
    return rows[rows["error"] == ""]


def map_ids_to_tags(source_crop_embeddings) -> dict[str, list[str]]:
    """``{embedding id: the VLM tags of the sample its crop came from}``; ids are the crops' row numbers in the
    stored shards (the ids the tag index returns)."""
    if not len(source_crop_embeddings):
        return {}
    usable = _usable_rows(source_crop_embeddings)
    mapping = {str(int(i)): [str(tag) for tag in tags] for i, tags in zip(usable["embedding_id"], usable["vlm_tags"])}
    untagged = usable.loc[~usable["has_tags"].astype(bool), "sample_key"].nunique()
    logger.info("id_to_tags: %d crops of %d samples (%d samples without a tag file, kept with empty tags)",
                len(mapping), usable["sample_key"].nunique(), untagged)
    return mapping


def report_source_rejects(source_crop_embeddings) -> pd.DataFrame:
    """``tagging_rejects``: every unusable source sample, and every sample kept without a tag file."""
    rejects = Rejects(stage="tagging_source")
    if len(source_crop_embeddings):
        rows = source_crop_embeddings.rows
        for row in rows[rows["error"] != ""].itertuples():
            rejects.add(f"sample {row.sample_key} of {row.shard}", "sample_unusable", f"{row.error}; skipped",
                        log=False)
        untagged = rows[(rows["error"] == "") & ~rows["has_tags"].astype(bool)].drop_duplicates("sample_key")
        for row in untagged.itertuples():
            rejects.add(f"sample {row.sample_key} of {row.shard}", "tags_missing",
                        "no tag file; kept with empty tags", log=False)
    report = rejects.to_frame()
    logger.info("tagging_rejects: %s", report["reason"].value_counts().to_dict() if len(report) else "none")
    return report


# ----------------------------------------------------------------------------------------------------------------
# tagging_index
# ----------------------------------------------------------------------------------------------------------------


def build_tag_index(
    source_crop_embeddings, index: Params | IndexParams, batching: Params | BatchingParams
) -> IndexBundle:
    """FAISS index over the source crop embeddings (inner product on L2-normalised vectors), tuned to a recall.

    ``index.factory: auto`` chooses the index type from the number of vectors and ``index.memory_budget_mb``;
    a factory string overrides it. The search parameter is tuned to the smallest value reaching
    ``index.target_recall`` at ``index.k`` on held-out vectors; choice and measured recall are in ``info``.
    """
    index = from_params(IndexParams, index, "tagging.index")
    batching = from_params(BatchingParams, batching, "tagging.batching")
    if not len(source_crop_embeddings):
        raise ValueError("no source crop embeddings to index; run `kedro run --pipeline tagging_source` first")
    usable = _usable_rows(source_crop_embeddings)
    # only the crops' vectors are read (memory-mapped parts), not the error rows' zero vectors
    vectors = source_crop_embeddings.get(usable["key"].tolist()).astype(np.float32)
    bundle = build_index(
        vectors, usable["embedding_id"].to_numpy(), index.factory, train_sample=index.train_sample,
        seed=index.seed, memory_budget_mb=index.memory_budget_mb, k=index.k, target_recall=index.target_recall,
        held_out_queries=index.held_out_queries, batch_size=batching.batch_faiss, progress="index crops")
    bundle.info["model_spec_hashes"] = list(source_crop_embeddings.model_spec_hashes)
    return bundle


# ----------------------------------------------------------------------------------------------------------------
# tagging_target
# ----------------------------------------------------------------------------------------------------------------


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def segment_target_images(
    tagging_target_images: Mapping[str, Callable[[], bytes]],
    models: Params | ModelsParams,
    batching: Params | BatchingParams,
    target: Params | TargetParams,
) -> tuple[dict[str, bytes], pd.DataFrame, pd.DataFrame]:
    """Segment the images of one target folder and cut their crops (saved, so re-tagging never re-segments).

    Args:
        tagging_target_images: ``{image file name: loader}`` of the folder ``tagging.target.folder``.
        models: ``tagging.models`` parameters.
        batching: ``tagging.batching`` parameters.
        target: ``tagging.target`` parameters.

    Returns:
        The crops as PNG files ``{"<image stem>_<crop id>.png": bytes}``; the crop table (image, crop_id,
        crop_file, bbox, area, whole_image, key: content key of the crop + image model); and the folder's rejects
        (undecodable images, images with no object found that fall back to one whole-image crop).
    """
    models = from_params(ModelsParams, models, "tagging.models")
    batch_images = from_params(BatchingParams, batching, "tagging.batching").batch_images
    folder = from_params(TargetParams, target, "tagging.target").folder
    segmenter = build_segmenter(models.segmenter)
    # Segmentation only: the image model is loaded by embed_target_crops.
    spec_hash = models.clip_model.spec_hash
    rejects = Rejects(stage="tagging_target")
    files: dict[str, bytes] = {}
    rows: list[dict[str, Any]] = []
    names = list(tagging_target_images)
    started = time.perf_counter()
    for start in tqdm(range(0, len(names), batch_images), desc=f"segment {folder}", unit="batch", leave=False):
        batch = names[start : start + batch_images]
        images: list[bytes] = []
        for name in batch:
            try:
                images.append(tagging_target_images[name]())
            except OSError as error:
                images.append(b"")
                rejects.add(f"image {name} of folder {folder}", "image_unreadable", str(error))
        for name, result in zip(batch, segment_images(segmenter, images)):
            if isinstance(result, str):
                rejects.add(f"image {name} of folder {folder}", "image_undecodable", f"{result}; skipped")
                continue
            stem = name.rsplit(".", 1)[0]
            for crop in result:
                crop_file = f"{stem}_{crop.crop_id:03d}.png"
                files[crop_file] = _png(crop.image)
                rows.append({"image": name, "crop_id": crop.crop_id, "crop_file": crop_file,
                             "bbox": [int(v) for v in crop.bbox], "area": int(crop.area),
                             "whole_image": bool(crop.whole_image),
                             "key": content_key("target_crop", files[crop_file], spec_hash)})
                if crop.whole_image:
                    rejects.add(f"image {name} of folder {folder}", "no_objects_found",
                                "no mask passed the filters; the whole image is one crop", log=False)
    table = pd.DataFrame(rows, columns=["image", "crop_id", "crop_file", "bbox", "area", "whole_image", "key"])
    elapsed = time.perf_counter() - started
    logger.info("Folder %s: %d images → %d crops (%d whole-image fallbacks, %d undecodable) in %.1f s (%.1f "
                "images/s)", folder, len(names), len(table), int(table["whole_image"].sum()),
                len(names) - table["image"].nunique(), elapsed, len(names) / max(elapsed, 1e-9))
    return files, table, rejects.to_frame()


def embed_target_crops(
    tagging_target_crops: Mapping[str, Callable[[], bytes]],
    target_crop_table: pd.DataFrame,
    target_crop_embeddings_cache,
    models: Params | ModelsParams,
    batching: Params | BatchingParams,
    target: Params | TargetParams,
) -> EmbeddingTable:
    """Embed the saved crops whose key is not stored yet (re-running with the same crops computes nothing)."""
    models = from_params(ModelsParams, models, "tagging.models")
    batching = from_params(BatchingParams, batching, "tagging.batching")
    target = from_params(TargetParams, target, "tagging.target")
    # Byte-identical crops share a content key: each key is embedded once.
    unique = target_crop_table.drop_duplicates("key")
    pending = unique[unique["key"].isin(target_crop_embeddings_cache.missing(unique["key"]))]
    if pending.empty:
        logger.info("Target crops: all %d embeddings stored, nothing to compute", len(target_crop_table))
        return EmbeddingTable.empty(target_crop_embeddings_cache.dim or 0)
    encoder = CropEncoder(models.clip_model, batch_clips=batching.batch_clips, device=target.device,
                          mixed_precision=target.mixed_precision)
    started = time.perf_counter()
    pixels = [decode_rgb(tagging_target_crops[name]()) for name in pending["crop_file"]]
    vectors = encoder.embed_crops(pixels)
    elapsed = time.perf_counter() - started
    logger.info("Target crops: %d embedded (%.1f crops/s), %d reused", len(pending), len(pending) / max(elapsed, 1e-9),
                len(target_crop_table) - len(pending))
    rows = pending[["key", "image", "crop_id", "crop_file"]].reset_index(drop=True)
    return EmbeddingTable(vectors, rows, model_spec_hash=encoder.model.spec_hash)


def tag_target_images(
    tag_index: IndexBundle,
    id_to_tags: Mapping[str, list[str]],
    target_crop_embeddings,
    target_crop_table: pd.DataFrame,
    tagging_target_crops: Mapping[str, Callable[[], bytes]],
    batching: Params | BatchingParams,
    target: Params | TargetParams,
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], Image.Image]:
    """Tag every image of the folder: each crop votes with its ``k`` nearest source crops, images take the union.

    A tag is kept for a crop when at least ``min_votes`` of its ``k`` neighbours carry it, scored by its
    similarity-weighted vote share (see :mod:`.voting`); an image's tag score is its best crop's.

    Returns:
        Per-image tags as a table (image, tag, score, rank), as JSON ``{image: {tag: score}}`` (every image of the
        crop table, tagged or not), and a contact sheet of the crops with their tags.
    """
    batching = from_params(BatchingParams, batching, "tagging.batching")
    target = from_params(TargetParams, target, "tagging.target")
    k, min_votes = target.k, target.min_votes
    if target_crop_table.empty:
        logger.warning("No crops to tag")
        return (pd.DataFrame(columns=["image", "tag", "score", "rank"]), {},
                contact_sheet([], [], [], max_crops=1))
    vectors = target_crop_embeddings.get(target_crop_table["key"].tolist())
    if vectors.shape[1] != tag_index.dim:
        raise ValueError(f"target crop embeddings are {vectors.shape[1]}-d but the tag index holds {tag_index.dim}-d "
                         f"vectors; embed target and source with the same tagging.models.clip_model")
    # tag_index arrives replicated to the GPUs when there are any (FaissIndexDataset's use_gpu load arg)
    scores, ids = search_batched(tag_index, vectors.astype(np.float32), k, batching.batch_faiss)
    lookup = {int(key): tags for key, tags in id_to_tags.items()}
    crop_tags = [vote_crop_tags(row_ids, row_scores, lookup, min_votes) for row_ids, row_scores in zip(ids, scores)]
    per_image: dict[str, dict[str, float]] = {}
    for image, group in target_crop_table.reset_index(drop=True).groupby("image", sort=False):
        per_image[str(image)] = {tag: round(float(score), 4)
                                 for tag, score in vote_image_tags([crop_tags[i] for i in group.index]).items()}
    table = pd.DataFrame([{"image": image, "tag": tag, "score": score, "rank": rank}
                          for image, tags in per_image.items() for rank, (tag, score) in enumerate(tags.items())],
                         columns=["image", "tag", "score", "rank"])
    logger.info("Tagged %d images from %d crops (k=%d, min_votes=%d): %.2f tags per image, %d images untagged",
                len(per_image), len(target_crop_table), k, min_votes, len(table) / max(len(per_image), 1),
                sum(1 for tags in per_image.values() if not tags))
    shown = target_crop_table.head(target.contact_sheet.max_crops)
    sheet = contact_sheet([tagging_target_crops[name]() for name in shown["crop_file"]],
                          [f"{row.image} #{row.crop_id}" for row in shown.itertuples()],
                          [crop_tags[i] for i in shown.index], thumb_size=target.contact_sheet.thumb_size,
                          max_crops=len(shown))
    return table, per_image, sheet


def evaluate_target_tags(
    target_tags: Mapping[str, Mapping[str, float]], tagging_target_truth: Mapping[str, Mapping[str, list[str]]],
    target: Params | TargetParams,
) -> dict[str, Any]:
    """Micro tag precision/recall/F1 of the folder's predicted tags against its true tags (demo collections)."""
    target = from_params(TargetParams, target, "tagging.target")
    folder = target.folder
    truth = tagging_target_truth.get(folder)
    if truth is None:
        raise ValueError(f"no true tags for folder {folder!r}; folders with true tags: {sorted(tagging_target_truth)}")
    scores = tag_precision_recall({image: list(tags) for image, tags in target_tags.items()}, truth)
    report = {"folder": folder, **{name: round(value, 4) for name, value in scores.items()},
              "k": target.k, "min_votes": target.min_votes}
    logger.info("Folder %s tags vs truth: precision %.3f, recall %.3f, F1 %.3f over %d images", folder,
                scores["precision"], scores["recall"], scores["f1"], int(scores["images"]))
    return report
