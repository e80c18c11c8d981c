"""Nodes of the auto-tagging pipelines (pure functions: data and parameters in, data out).

``tagging_source`` segments and embeds a tagged source collection; ``tagging_index`` builds the FAISS index over
its crop embeddings, trains a linear probe per tag and calibrates per-tag thresholds on held-out source images;
``tagging_target`` segments one target folder, saves its crops, embeds them and tags every image by kNN vote,
probe or both; ``tagging_evaluate`` compares the methods against a folder's true tags.
"""
from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from tqdm.auto import tqdm

from multimodal_suite.common.embeddings import EmbeddingTable
from multimodal_suite.common.faiss_index import IndexBundle
from multimodal_suite.common.hashing import content_key
from multimodal_suite.common.params import from_params
from multimodal_suite.common.paths import quoted_params_form
from multimodal_suite.common.rejects import Rejects
from multimodal_suite.common.vector_index import build_index, search_batched
from multimodal_suite.common.webdataset_shards import (
    PARQUET_UNREADABLE,
    WebDatasetShards,
    is_shard_problem_key,
    kept_problem_code,
)
from multimodal_suite.pipelines.tagging.crops import (
    CropEmbedder,
    CropEncoder,
    crop_pipeline_hash,
    decode_rgb,
    segment_images,
)
from multimodal_suite.pipelines.tagging.segmentation import build_segmenter
from multimodal_suite.pipelines.tagging.source_crops import iter_source_tables

from .calibration import (
    KEEP_AT,
    METHODS,
    assign_folds,
    calibrate_methods,
    method_scores,
    micro_f1,
    thresholds_from_report,
    thresholds_report,
)
from .params import BatchingParams, IndexParams, ModelsParams, SourceParams, TargetParams
from .probe import LinearProbe, fit_probe, out_of_fold_scores
from .reporting import contact_sheet, per_tag_f1_figure
from .voting import image_max, knn_crop_scores, per_tag_precision_recall, tag_matrix, tag_precision_recall

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
    if not len(view):
        raise ValueError(
            f"no source shards selected: {tagging_source_shards.url} holds {len(tagging_source_shards)} shards "
            f"(*.tar, *.tar.gz, *.tgz) and tagging.source.start_shard={source.start_shard}, "
            f"end_shard={source.end_shard} select none of them; put the shards there (`kedro run --pipeline "
            "demo_data --env demo` writes samples) or choose a range that holds some")
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
            mixed_precision=source.mixed_precision, device=source.device,
            max_image_pixels=source.max_image_pixels)
    else:
        embedder = CropEmbedder(models.segmenter, models.clip_model, batch_clips=batching.batch_clips,
                                device=source.device, mixed_precision=source.mixed_precision,
                                max_image_pixels=source.max_image_pixels)
        tables = iter_source_tables(view, todo, embedder, batching.batch_images)
    crops = samples = 0
    for shard, table in tables:
        ok = table.rows["error"] == ""
        embedded = set(table.rows.loc[ok, "sample_key"])
        # a sample read despite a problem has an error row beside its crops: it counts as embedded
        shard_crops, shard_samples = int(ok.sum()), len(embedded)
        unusable = int((~table.rows.loc[~ok, "sample_key"].isin(embedded)).sum())
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


def _source_reject(shard: str, sample_key: str, error: str, embedded: bool) -> tuple[str, str, str]:
    """``(item, reason, detail)`` of one error row of the stored source crops: a problem of the shard itself, of a
    sample that was embedded all the same (``embedded``: it has crop rows), or of a sample that was skipped."""
    if is_shard_problem_key(sample_key, shard):
        reason = "parquet_unreadable" if error.startswith(PARQUET_UNREADABLE) else "shard_unreadable"
        return f"shard {shard}", reason, error
    item = f"sample {sample_key} of {shard}"
    if embedded:
        return item, kept_problem_code(error) or "sample_problem", f"{error}; embedded"
    return item, "sample_unusable", error if error.endswith("skipped") else f"{error}; skipped"


def report_source_rejects(source_crop_embeddings) -> pd.DataFrame:
    """``tagging_rejects``: one row per problem, each sample under one status: skipped (``sample_unusable``),
    embedded despite a problem (``tags_unreadable``: with empty tags, ``metadata_unreadable``, …) or embedded
    without a tag file (``tags_missing``); and one row per shard problem (``shard_unreadable``, ``parquet_unreadable``).
    """
    rejects = Rejects(stage="tagging_source")
    if len(source_crop_embeddings):
        rows = source_crop_embeddings.rows
        crops = rows[rows["error"] == ""]
        embedded = set(zip(crops["shard"], crops["sample_key"]))
        tags_noted: set[tuple[str, str]] = set()
        for row in rows[rows["error"] != ""].itertuples():
            sample = (row.shard, row.sample_key)
            item, reason, detail = _source_reject(row.shard, row.sample_key, row.error, sample in embedded)
            rejects.add(item, reason, detail, log=False)
            if reason == "tags_unreadable":
                tags_noted.add(sample)
        untagged = crops[~crops["has_tags"].astype(bool)].drop_duplicates(["shard", "sample_key"])
        for row in untagged.itertuples():
            if (row.shard, row.sample_key) not in tags_noted:
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


@dataclass(frozen=True)
class _SourceImages:
    """The tagged source images and their crops, as the probe and the calibration see them.

    Attributes:
        keys: ``"<shard>/<sample key>"`` of each image.
        tags: the vocabulary, sorted.
        labels: bool ``[images, tags]``.
        vectors: float32 ``[crops, dim]`` embeddings of the images' crops.
        crop_image: int ``[crops]`` image number of each crop.
        embedding_ids: int ``[crops]`` id of each crop in the tag index.
    """

    keys: list[str]
    tags: list[str]
    labels: np.ndarray
    vectors: np.ndarray
    crop_image: np.ndarray
    embedding_ids: np.ndarray


def _tagged_source_images(source_crop_embeddings) -> _SourceImages:
    """The source images that have a tag file (an image without one is no negative of any tag) and their crops."""
    if not len(source_crop_embeddings):
        raise ValueError("no source crop embeddings; run `kedro run --pipeline tagging_source` first")
    usable = _usable_rows(source_crop_embeddings)
    tagged = usable[usable["has_tags"].astype(bool)]
    if tagged.empty:
        raise ValueError("no source crop comes from a sample with a tag file: nothing to train or calibrate on; "
                         "check the tags folder of tagging_source_shards@webdataset")
    image_key = (tagged["shard"].astype(str) + "/" + tagged["sample_key"].astype(str)).to_numpy()
    keys, crop_image = np.unique(image_key, return_inverse=True)
    tags = sorted({str(tag) for crop_tags in tagged["vlm_tags"] for tag in crop_tags})
    column = {tag: position for position, tag in enumerate(tags)}
    labels = np.zeros((len(keys), len(tags)), dtype=bool)
    for image, crop_tags in zip(crop_image, tagged["vlm_tags"]):
        labels[image, [column[str(tag)] for tag in crop_tags]] = True
    vectors = source_crop_embeddings.get(tagged["key"].tolist()).astype(np.float32)
    return _SourceImages([str(key) for key in keys], tags, labels, vectors, crop_image.astype(np.int64),
                         tagged["embedding_id"].to_numpy(dtype=np.int64))


def train_tag_probe(source_crop_embeddings, index: Params | IndexParams) -> dict[str, Any]:
    """One linear classifier per tag over the source crop embeddings, trained from image-level tags on every
    tagged source image (multiple-instance: see :mod:`.probe`).

    Returns:
        ``{"config": {tags, dim, probe}, "state_dict": {weight, bias, mean, scale}, "metadata": {…}}`` for
        ``SafetensorsModelDataset``.
    """
    index = from_params(IndexParams, index, "tagging.index")
    images = _tagged_source_images(source_crop_embeddings)
    started = time.perf_counter()
    probe = fit_probe(images.vectors, images.crop_image, images.labels, images.tags, index.probe)
    logger.info("Tag probe: %d tags over %d crops of %d source images in %.1f s", len(images.tags),
                len(images.vectors), len(images.keys), time.perf_counter() - started)
    return probe.to_dataset(index.probe, {"images": len(images.keys), "crops": len(images.vectors),
                                          "model_spec_hashes": list(source_crop_embeddings.model_spec_hashes)})


def _held_out_knn_scores(
    tag_index: IndexBundle, images: _SourceImages, chosen: np.ndarray, id_to_tags: Mapping[str, list[str]], k: int,
    batch_faiss: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Best-crop kNN vote shares and vote counts ``[chosen images, tags]``, each crop's own image left out of its
    neighbours: the vote an index without that image would give."""
    crops = np.flatnonzero(np.isin(images.crop_image, chosen))
    local = np.searchsorted(chosen, images.crop_image[crops])
    # search past the query image's own crops, then drop them
    extra = int(np.bincount(local).max())
    scores, ids = search_batched(tag_index, images.vectors[crops], k + extra, batch_faiss,
                                 progress="calibration queries")
    image_of_id = np.full(int(max(ids.max(), images.embedding_ids.max())) + 1, -1, dtype=np.int64)
    image_of_id[images.embedding_ids] = images.crop_image  # untagged crops stay -1: never a query's own
    own = (ids >= 0) & (image_of_id[np.maximum(ids, 0)] == images.crop_image[crops][:, None])
    keep = np.argsort(own, axis=1, kind="stable")[:, :k]
    ids, scores = np.take_along_axis(ids, keep, axis=1), np.take_along_axis(scores, keep, axis=1)
    ids = np.where(np.take_along_axis(own, keep, axis=1), -1, ids)
    lookup = {int(key): tags for key, tags in id_to_tags.items()}
    shares, votes = knn_crop_scores(ids, scores, tag_matrix(lookup, images.tags))
    return image_max(shares, local, len(chosen)), image_max(votes, local, len(chosen))


def calibrate_tag_thresholds(
    tag_index: IndexBundle,
    source_crop_embeddings,
    id_to_tags: Mapping[str, list[str]],
    index: Params | IndexParams,
    target: Params | TargetParams,
    batching: Params | BatchingParams,
) -> dict[str, Any]:
    """Per-tag thresholds of every method, chosen for the best F1 on held-out source images (see
    :mod:`.calibration`).

    A seeded sample of the tagged source images (``index.calibration.max_images``) is split into
    ``index.calibration.folds``. The index holds every source crop, so targets are tagged against all of them;
    a held-out image's kNN vote leaves its own crops out (the same search as against an index without it), and
    its probe scores come from a probe trained on the other folds. No target truth is used.

    Returns:
        The thresholds report of :func:`~.calibration.thresholds_report`, with ``k``, ``images``, ``folds`` and
        ``seed``.
    """
    index = from_params(IndexParams, index, "tagging.index")
    target = from_params(TargetParams, target, "tagging.target")
    batching = from_params(BatchingParams, batching, "tagging.batching")
    images = _tagged_source_images(source_crop_embeddings)
    folds = assign_folds(images.keys, index.calibration.folds, index.calibration.max_images, index.seed)
    if len(np.unique(folds[folds >= 0])) < 2:
        raise ValueError(f"{len(images.keys)} tagged source images are too few to calibrate on "
                         f"{index.calibration.folds} folds; embed more source shards")
    started = time.perf_counter()
    chosen = np.flatnonzero(folds >= 0)
    probe = out_of_fold_scores(images.vectors, images.crop_image, images.labels, images.tags, folds,
                               index.probe)[chosen]
    knn, votes = _held_out_knn_scores(tag_index, images, chosen, id_to_tags, target.k, batching.batch_faiss)
    truth = images.labels[chosen]
    picked = calibrate_methods(knn, probe, truth)
    calibrated = method_scores(knn, probe, {method: thresholds for method, (thresholds, _) in picked.items()})
    micro = {"knn_min_votes": micro_f1(votes >= target.min_votes, truth),
             **{method: micro_f1(scores >= KEEP_AT, truth) for method, scores in calibrated.items()}}
    logger.info("Vote thresholds of %d tags calibrated on %d held-out source images in %.1f s; held-out micro F1: "
                "%s", len(images.tags), len(chosen), time.perf_counter() - started,
                ", ".join(f"{method} {value:.3f}" for method, value in micro.items()))
    return thresholds_report(images.tags, picked, truth, micro, k=target.k, min_votes=target.min_votes,
                             images=len(chosen), folds=index.calibration.folds, seed=index.seed,
                             model_spec_hashes=list(source_crop_embeddings.model_spec_hashes))


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
    target = from_params(TargetParams, target, "tagging.target")
    folder = target.folder
    if not tagging_target_images:
        raise ValueError(
            f"target folder {folder!r} holds no images (tagging_target_images: data/01_raw/tagging_target/{folder}/ "
            "in conf/base); put the images to tag there, or choose a folder that has some with "
            f"{quoted_params_form('tagging.target.folder', '<name>')}")
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
        for name, result in zip(batch, segment_images(segmenter, images, target.max_image_pixels)):
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
    pixels = [decode_rgb(tagging_target_crops[name](), target.max_image_pixels) for name in pending["crop_file"]]
    vectors = encoder.embed_crops(pixels)
    elapsed = time.perf_counter() - started
    logger.info("Target crops: %d embedded (%.1f crops/s), %d reused", len(pending), len(pending) / max(elapsed, 1e-9),
                len(target_crop_table) - len(pending))
    rows = pending[["key", "image", "crop_id", "crop_file"]].reset_index(drop=True)
    return EmbeddingTable(vectors, rows, model_spec_hash=encoder.model.spec_hash)


def _tag_rows(scores: np.ndarray, tags: Sequence[str]) -> list[dict[str, float]]:
    """``{tag: calibrated score}`` per row of ``scores`` for the tags kept (score ≥ ``KEEP_AT``), best first."""
    rows = []
    for row in scores:
        kept = np.flatnonzero(row >= KEEP_AT)
        rows.append(dict(sorted(((tags[j], round(float(row[j]), 4)) for j in kept),
                                key=lambda item: (-item[1], item[0]))))
    return rows


SCORE_COLUMNS = ["image", "tag", "knn_share", "knn_votes", "probe_score", "knn", "probe", "both", "knn_min_votes"]
"""Columns of ``target_tag_scores``: raw kNN share and votes, raw probe probability, each method's calibrated
score, and whether the uncalibrated ``min_votes`` vote keeps the tag."""


def tag_target_images(
    tag_index: IndexBundle,
    id_to_tags: Mapping[str, list[str]],
    tag_probe: Mapping[str, Any],
    vote_thresholds: Mapping[str, Any],
    target_crop_embeddings,
    target_crop_table: pd.DataFrame,
    tagging_target_crops: Mapping[str, Callable[[], bytes]],
    batching: Params | BatchingParams,
    target: Params | TargetParams,
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], Image.Image, pd.DataFrame]:
    """Tag every image of the folder with ``target.method``; score it with every method for the evaluation.

    Each crop gets the similarity-weighted vote shares of its ``k`` nearest source crops (see :mod:`.voting`)
    and the tag probe's probabilities; an image's score of a tag is its best crop's. Each method's score is
    calibrated so that 0.5 is the tag's threshold from ``tagging_index`` (see :mod:`.calibration`), and the
    image keeps the tags whose calibrated score of ``target.method`` reaches 0.5.

    Returns:
        Per-image tags as a table (image, tag, score, rank), as JSON ``{image: {tag: calibrated score}}`` (every
        image of the crop table, tagged or not), a contact sheet of the crops with their tags, and every method's
        scores (``SCORE_COLUMNS``) of each image's tags that some method keeps.
    """
    batching = from_params(BatchingParams, batching, "tagging.batching")
    target = from_params(TargetParams, target, "tagging.target")
    k, method = target.k, target.method
    if target_crop_table.empty:
        logger.warning("No crops to tag")
        return (pd.DataFrame(columns=["image", "tag", "score", "rank"]), {},
                contact_sheet([], [], [], max_crops=1), pd.DataFrame(columns=SCORE_COLUMNS))
    crop_table = target_crop_table.reset_index(drop=True)
    vectors = target_crop_embeddings.get(crop_table["key"].tolist()).astype(np.float32)
    if vectors.shape[1] != tag_index.dim:
        raise ValueError(f"target crop embeddings are {vectors.shape[1]}-d but the tag index holds {tag_index.dim}-d "
                         f"vectors; embed target and source with the same tagging.models.clip_model")
    probe = LinearProbe.from_dataset(tag_probe)
    tags = list(probe.tags)
    thresholds = thresholds_from_report(vote_thresholds, tags)
    if vote_thresholds.get("k") != k:
        logger.warning("The vote thresholds were calibrated at k=%s, the folder is tagged at tagging.target.k=%d: "
                       "the kNN thresholds are off; run `kedro run --pipeline tagging_index` with this k",
                       vote_thresholds.get("k"), k)
    # tag_index arrives replicated to the GPUs when there are any (FaissIndexDataset's use_gpu load arg)
    similarities, ids = search_batched(tag_index, vectors, k, batching.batch_faiss)
    lookup = {int(key): source_tags for key, source_tags in id_to_tags.items()}
    shares, votes = knn_crop_scores(ids, similarities, tag_matrix(lookup, tags))
    probabilities = probe.crop_scores(vectors)
    crop_image, image_names = pd.factorize(crop_table["image"])
    raw = {name: image_max(values, crop_image, len(image_names))
           for name, values in (("knn_share", shares), ("knn_votes", votes), ("probe_score", probabilities))}
    scored = method_scores(raw["knn_share"], raw["probe_score"], thresholds)
    baseline = raw["knn_votes"] >= target.min_votes
    per_image = {str(name): tags_of_image for name, tags_of_image in zip(image_names, _tag_rows(scored[method], tags))}
    table = pd.DataFrame([{"image": image, "tag": tag, "score": score, "rank": rank}
                          for image, image_tags in per_image.items()
                          for rank, (tag, score) in enumerate(image_tags.items())],
                         columns=["image", "tag", "score", "rank"])
    kept = baseline | np.any([scores >= KEEP_AT for scores in scored.values()], axis=0)
    image_rows, tag_columns = np.nonzero(kept)
    score_table = pd.DataFrame({
        "image": [str(image_names[i]) for i in image_rows], "tag": [tags[j] for j in tag_columns],
        **{name: values[image_rows, tag_columns] for name, values in raw.items()},
        **{name: values[image_rows, tag_columns] for name, values in scored.items()},
        "knn_min_votes": baseline[image_rows, tag_columns]}, columns=SCORE_COLUMNS)
    score_table["knn_votes"] = score_table["knn_votes"].astype(np.int32)
    logger.info("Tagged %d images from %d crops (method %s, k=%d): %.2f tags per image, %d images untagged",
                len(per_image), len(crop_table), method, k, len(table) / max(len(per_image), 1),
                sum(1 for image_tags in per_image.values() if not image_tags))
    shown = crop_table.head(target.contact_sheet.max_crops)
    crop_tags = _tag_rows(method_scores(shares[shown.index], probabilities[shown.index], thresholds)[method], tags)
    sheet = contact_sheet([tagging_target_crops[name]() for name in shown["crop_file"]],
                          [f"{row.image} #{row.crop_id}" for row in shown.itertuples()],
                          crop_tags, thumb_size=target.contact_sheet.thumb_size, max_crops=len(shown))
    return table, per_image, sheet, score_table


EVALUATED_METHODS = ("knn_min_votes", *METHODS)
"""What ``tagging_evaluate`` compares: the uncalibrated ``min_votes`` vote, then the calibrated methods."""


def _predicted_tags(target_tag_scores: pd.DataFrame, method: str) -> dict[str, list[str]]:
    """``{image: [tags]}`` that ``method`` keeps, from the score table of :func:`tag_target_images`."""
    kept = target_tag_scores[target_tag_scores[method].astype(bool)] if method == "knn_min_votes" else \
        target_tag_scores[target_tag_scores[method] >= KEEP_AT]
    return {str(image): group["tag"].tolist() for image, group in kept.groupby("image", sort=False)}


def evaluate_target_tags(
    target_tag_scores: pd.DataFrame, tagging_target_truth: Mapping[str, Mapping[str, list[str]]],
    target: Params | TargetParams,
) -> tuple[dict[str, Any], pd.DataFrame, Figure]:
    """Tag precision/recall/F1 of every method on the folder against its true tags (demo collections).

    Returns:
        The report: ``folder``, ``images``, ``method`` and its micro ``precision``/``recall``/``f1``, ``methods``
        (micro precision/recall/F1 and macro F1 of each of ``EVALUATED_METHODS``) and ``per_tag`` rows; the
        per-tag rows as a table (method, tag, support, predicted, true_positives, precision, recall, f1); and a
        bar plot of the per-tag F1 of each method.
    """
    target = from_params(TargetParams, target, "tagging.target")
    folder = target.folder
    truth = tagging_target_truth.get(folder)
    if truth is None:
        raise ValueError(f"no true tags for folder {folder!r}; folders with true tags: {sorted(tagging_target_truth)}")
    methods: dict[str, dict[str, float]] = {}
    per_tag: list[dict[str, Any]] = []
    for method in EVALUATED_METHODS:
        predicted = _predicted_tags(target_tag_scores, method)
        scores = tag_precision_recall(predicted, truth)
        rows = per_tag_precision_recall(predicted, truth)
        true_tags = [row for row in rows if row["support"]]
        macro = sum(row["f1"] for row in true_tags) / len(true_tags) if true_tags else 0.0
        methods[method] = {"precision": round(scores["precision"], 4), "recall": round(scores["recall"], 4),
                           "f1": round(scores["f1"], 4), "macro_f1": round(macro, 4)}
        per_tag += [{"method": method, **{name: round(value, 4) if isinstance(value, float) else value
                                          for name, value in row.items()}} for row in rows]
    chosen = methods[target.method]
    report = {"folder": folder, "images": len(truth), "method": target.method,
              **{name: chosen[name] for name in ("precision", "recall", "f1")},
              "k": target.k, "min_votes": target.min_votes, "methods": methods, "per_tag": per_tag}
    logger.info("Folder %s tags vs truth over %d images (micro P / R / F1): %s", folder, len(truth),
                "; ".join(f"{method} {values['precision']:.3f} / {values['recall']:.3f} / {values['f1']:.3f}"
                          for method, values in methods.items()))
    table = pd.DataFrame(per_tag, columns=["method", "tag", "support", "predicted", "true_positives", "precision",
                                           "recall", "f1"])
    return report, table, per_tag_f1_figure(table, EVALUATED_METHODS, f"folder {folder}: F1 per tag")


def _metric_name(tag: str) -> str:
    """``tag`` as part of an MLflow metric key (letters, digits, ``_ - . /`` and spaces only)."""
    return re.sub(r"[^\w\-. /]", "_", tag)


def evaluation_metrics(tagging_evaluation: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The evaluation as MLflow metrics: ``<method>.f1`` (and precision, recall, macro_f1) of every method, and
    ``<method>.per_tag.<tag>.f1``."""
    metrics = {f"{method}.{name}": {"value": float(value), "step": 0}
               for method, values in tagging_evaluation["methods"].items() for name, value in values.items()}
    metrics.update({f"{row['method']}.per_tag.{_metric_name(row['tag'])}.f1": {"value": float(row["f1"]), "step": 0}
                    for row in tagging_evaluation["per_tag"]})
    return metrics
