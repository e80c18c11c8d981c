"""Source crop embedding on Ray Data: shards are read by Ray tasks and segmented + embedded by an actor pool whose
replicas hold the segmenter and the image model together.

The dataflow is ``from_items(shards) → flat_map(read samples) → map_batches(CropEmbedActor, actor pool)``. Reading
uses the same tolerant reader as the in-process path (:class:`WebDatasetShards`), so a corrupt
member or a truncated tar becomes an error row instead of failing the dataset; each replica calls the same
:class:`~.crops.CropEmbedder` and :func:`~.source_crops.sample_rows`, so both paths give identical tables.
Tables come back one shard at a time, as soon as every sample of the shard has come back (a shard's reader ends
with a marker row carrying its sample count); crop images never leave the replica that cut them.
"""
from __future__ import annotations

import json
import logging
import time
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import ray
import ray.data
import torch

from multimodal_suite.common.device import MixedPrecision
from multimodal_suite.common.images import DEFAULT_MAX_IMAGE_PIXELS, pixel_limit
from multimodal_suite.common.models import ModelSpec
from multimodal_suite.common.ray import RayOptions, check_replica_fits, ray_session
from multimodal_suite.common.webdataset_shards import WebDatasetShards

from .crops import CropEmbedder, crop_pipeline_hash
from .ray_shard_reader import NO_END, read_shard_rows
from .segmentation import SegmenterConfig
from .source_crops import ROW_COLUMNS, rows_to_table, sample_rows

logger = logging.getLogger(__name__)


class CropEmbedActor:
    """One replica of the actor pool: segmenter + image model, loaded once, applied batch after batch.

    Output batches have one row per crop (or per unusable sample, or per end marker): ``shard``, ``seq`` (the
    sample's position in its shard), ``end_total`` (the shard's sample count on its end marker, else −1),
    ``record`` (the row as JSON, "" on end markers) and ``embedding`` (float32 [D]).
    """

    def __init__(self, segmenter: Mapping[str, Any], model: ModelSpec, *, batch_clips: int, device: str | None,
                 mixed_precision: MixedPrecision, num_threads: int | None,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self.embedder = CropEmbedder(segmenter, model, batch_clips=batch_clips, device=device,
                                     mixed_precision=mixed_precision, max_image_pixels=max_image_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embedder = self.embedder
        count = len(batch["shard"])
        samples = [i for i in range(count) if batch["end_total"][i] == NO_END and not batch["problem"][i]]
        results = dict(zip(samples, embedder.process([bytes(batch["image"][i]) for i in samples])))
        out: dict[str, list[Any]] = {"shard": [], "seq": [], "end_total": [], "record": [], "embedding": []}
        for i in range(count):
            shard, seq, end_total = str(batch["shard"][i]), int(batch["seq"][i]), int(batch["end_total"][i])
            if end_total != NO_END:
                rows, vectors = [{}], np.zeros((1, embedder.dim), np.float32)
            else:
                result = results.get(i, str(batch["problem"][i]))
                rows, vectors = sample_rows(shard, str(batch["sample_key"][i]), json.loads(batch["tags_json"][i]),
                                            result, embedder.pipeline_hash, embedder.dim)
            for row, vector in zip(rows, vectors):
                out["shard"].append(shard)
                out["seq"].append(seq)
                out["end_total"].append(end_total)
                out["record"].append(json.dumps(row) if row else "")
                out["embedding"].append(vector)
        return {"shard": np.array(out["shard"], dtype=object), "seq": np.array(out["seq"], dtype=np.int64),
                "end_total": np.array(out["end_total"], dtype=np.int64),
                "record": np.array(out["record"], dtype=object),
                "embedding": np.stack(out["embedding"]).astype(np.float32)}


def iter_source_tables_ray(
    view: WebDatasetShards,
    shards: Sequence[str],
    segmenter: Mapping[str, Any] | SegmenterConfig,
    model: Mapping[str, Any] | ModelSpec,
    *,
    options: RayOptions,
    batch_images: int = 24,
    batch_clips: int = 64,
    mixed_precision: MixedPrecision = "auto",
    device: str | None = "auto",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Iterator[tuple[str, Any]]:
    """``(shard, EmbeddingTable)`` per shard, computed on a Ray Data actor pool; same tables as in process.

    Shards are yielded in the order they complete, which need not be the order of ``shards``.

    Args:
        view: the source collection; it must be readable from every Ray node (shared or fsspec storage).
        shards: shard names of ``view`` to process.
        segmenter: segmenter configuration.
        model: image model spec.
        options: the actor pool (``num_replicas`` replicas, each with its own segmenter and model, asking for
            ``num_cpus_per_replica`` CPUs, also its torch thread count, and ``num_gpus_per_replica`` GPUs) and
            where it runs (an existing connection, ``address`` / ``RAY_ADDRESS``, else a local Ray sized by
            ``num_cpus``, ``num_gpus``, ``object_store_gb``, started and stopped here).
        batch_images: samples per ``map_batches`` batch (the segmenter's batch); ``options.batch_size`` wins when
            set.
        batch_clips: crops per image-model batch inside a replica.
        mixed_precision: ``auto`` (fp16 on GPUs, bf16 on CPUs with bf16 instructions, else fp32), or on/off.
        device: ``auto`` or a torch device string, inside each replica.
        max_image_pixels: a sample whose image header claims more pixels is an error row, never decoded.

    Raises:
        RuntimeError: one replica asks for more than a local Ray started here has, or Ray Data left a shard
            incomplete.
    """
    if not shards:
        return
    segmenter_config = SegmenterConfig.from_dict(segmenter)
    parsed = ModelSpec.parse(model)
    pipeline_hash = crop_pipeline_hash(segmenter_config, parsed)
    batch_images = options.batch_size_or(batch_images)
    max_image_pixels = pixel_limit(max_image_pixels)  # a wrong setting fails here, not in every replica
    started = time.perf_counter()
    with ray_session(options) as session:
        if session == "local":
            check_replica_fits(options)
        dataset = ray.data.from_items([{"shard": shard} for shard in shards], override_num_blocks=len(shards))
        # Reading is I/O: it takes no CPU slot, so the replicas can hold every CPU of the cluster without
        # starving the readers that feed them (which would stall the dataset).
        samples = dataset.flat_map(partial(read_shard_rows, view), num_cpus=0)
        embedded = samples.map_batches(
            CropEmbedActor,
            batch_size=batch_images,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=options.num_replicas),
            num_cpus=options.num_cpus_per_replica,
            num_gpus=options.num_gpus_per_replica,
            fn_constructor_kwargs={"segmenter": segmenter_config.to_dict(), "model": parsed,
                                   "batch_clips": batch_clips, "device": device,
                                   "mixed_precision": mixed_precision,
                                   "num_threads": max(1, int(options.num_cpus_per_replica)),
                                   "max_image_pixels": max_image_pixels},
        )
        pending: dict[str, dict[str, Any]] = {}
        done = 0
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            for shard, seq, end_total, record, vector in zip(batch["shard"], batch["seq"], batch["end_total"],
                                                             batch["record"], batch["embedding"]):
                dim = len(vector)  # every row, end markers included, carries a vector of the model's width
                state = pending.setdefault(str(shard), {"rows": [], "seen": set(), "total": None})
                if end_total != NO_END:
                    state["total"] = int(end_total)
                else:
                    state["rows"].append((int(seq), len(state["rows"]), json.loads(record), vector))
                    state["seen"].add(int(seq))
            for shard in [name for name, state in pending.items()
                          if state["total"] is not None and len(state["seen"]) == state["total"]]:
                state = pending.pop(shard)
                ordered = sorted(state["rows"], key=lambda item: (item[0], item[1]))
                rows = [{column: item[2][column] for column in ROW_COLUMNS} for item in ordered]
                vectors = [np.stack([item[3] for item in ordered])] if ordered else []
                done += 1
                yield shard, rows_to_table(rows, vectors, dim, pipeline_hash)
        if pending:
            raise RuntimeError(f"Ray Data returned incomplete results for shards {sorted(pending)}")
    logger.info("Ray Data: %d shards segmented and embedded in %.1f s on %d replica(s)", done,
                time.perf_counter() - started, options.num_replicas)
