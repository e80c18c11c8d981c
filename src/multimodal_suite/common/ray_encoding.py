"""Image embedding on Ray Data: an actor pool of model replicas over ``map_batches``, for collections too large
for one process.

The in-process path (:func:`~multimodal_suite.common.encoding.encode_images`) stays the default; this one spreads
the same work over a Ray cluster (or the local machine). Each replica loads the model once from its spec and, per
batch, decodes and embeds with the same functions as the in-process path
(:func:`~multimodal_suite.common.encoding.prepare_image`, :func:`~multimodal_suite.common.encoding.embed_prepared`),
so both give the same vectors and the same failure reasons. Rows carry their input position; results are put back
in input order whatever order Ray returns batches in.

Image bytes never pass through the driver: rows hold the pickled loaders (``page.read_image_bytes`` of a
``PageRef``), and replicas read the images themselves, so the storage must be reachable from every Ray node
(a shared filesystem, or an fsspec URL such as ``s3://``).
"""
from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import ray
import ray.data
import torch
from ray import cloudpickle

from .batching import DynamicBatcher
from .device import MixedPrecision, autocast_dtype, pick_device
from .encoding import EncodeResult, embed_prepared, prepare_image
from .images import DEFAULT_MAX_IMAGE_PIXELS, pixel_limit
from .models import ModelSpec, load_model
from .ray import RayOptions, check_replica_fits, ray_session

logger = logging.getLogger(__name__)


class ImageEncoderActor:
    """One model replica of the actor pool: loads the model once, then embeds batch after batch.

    Input batches are ``{"position": int64 [B], "loader": object [B]}`` (each loader a cloudpickled zero-argument
    callable returning the image bytes); output batches are ``{"position": [B], "embedding": float32 [B, D],
    "error": str [B]}`` with a zero vector and the reason where an image could not be decoded, "" otherwise.

    Args:
        spec: the image model's spec.
        batch_size: largest batch the model sees; halved on out-of-memory and grown back, as in-process.
        device: ``auto`` (cuda → mps → cpu) or a torch device string; a replica given a GPU by Ray sees only it.
        mixed_precision: ``auto`` (fp16 on GPUs, bf16 on CPUs with bf16 instructions, else fp32), or on/off.
        decode_workers: threads decoding the images of a batch.
        num_threads: torch intra-op threads (the replica's CPU share); None keeps torch's default.
        max_image_pixels: an image whose header claims more pixels is a failure, refused before decoding.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        batch_size: int,
        device: str | None,
        mixed_precision: MixedPrecision,
        decode_workers: int,
        num_threads: int | None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.loaded = load_model(spec)
        if self.loaded.image_size is None:
            raise ValueError(f"model {spec.describe()} has no image size; is it an image encoder?")
        self.device = pick_device(device)
        self.dtype = autocast_dtype(self.device, mixed_precision)
        self.loaded.module.to(self.device)
        self.batcher = DynamicBatcher(batch_size)
        self.pool = ThreadPoolExecutor(max_workers=max(1, decode_workers))
        self.max_image_pixels = pixel_limit(max_image_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = self.loaded.image_size
        loaders = [cloudpickle.loads(blob) for blob in batch["loader"]]
        prepared = list(self.pool.map(lambda load: prepare_image(load, size, self.max_image_pixels), loaders))
        good = [j for j, item in enumerate(prepared) if not isinstance(item, str)]
        embeddings = np.zeros((len(prepared), self.loaded.output_dim), dtype=np.float32)
        if good:
            vectors = self.batcher.map(
                good, lambda rows: list(embed_prepared(self.loaded, [prepared[j] for j in rows], self.device,
                                                       self.dtype)))
            embeddings[good] = np.stack(vectors)
        errors = np.array([item if isinstance(item, str) else "" for item in prepared], dtype=object)
        return {"position": np.asarray(batch["position"], dtype=np.int64), "embedding": embeddings, "error": errors}


@dataclass
class _Part:
    """One output part being filled, and how many of its rows have not come back yet."""

    embeddings: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)
    missing: int = 0


def iter_encode_images_ray(
    spec: Mapping[str, Any] | ModelSpec,
    loaders: Sequence[Callable[[], bytes]],
    *,
    part_size: int,
    options: RayOptions,
    batch_size: int = 32,
    decode_workers: int = 2,
    mixed_precision: MixedPrecision = "auto",
    device: str | None = "auto",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Iterator[EncodeResult]:
    """Embed images on a Ray Data actor pool, yielding results part by part in input order.

    One actor pool serves the whole sequence (each replica loads the model once), while the caller receives
    ``part_size`` rows at a time: part ``k`` holds rows ``[k * part_size, (k + 1) * part_size)``, its failures
    keyed by position within the part, and is yielded as soon as it and every earlier part are complete.

    Args:
        spec: the image model's spec (see :mod:`multimodal_suite.common.models`); every replica loads it.
        loaders: one zero-argument callable per image returning its encoded bytes; must be picklable (cloudpickle)
            and able to read the image on any Ray node.
        part_size: rows per yielded result.
        options: the actor pool (``num_replicas``, ``num_cpus_per_replica``, ``num_gpus_per_replica``) and where
            it runs (an existing connection, ``address`` / ``RAY_ADDRESS``, else a local Ray sized by ``num_cpus``,
            ``num_gpus``, ``object_store_gb``, started and stopped here); see :func:`~.ray.ray_session`.
        batch_size: rows per ``map_batches`` batch, the largest batch a replica's model sees; ``options.batch_size``
            wins when set.
        decode_workers: decode threads per replica.
        mixed_precision: ``auto`` (fp16 on GPUs, bf16 on CPUs with bf16 instructions, else fp32), or on/off.
        device: ``auto`` or a torch device string, as seen inside a replica.
        max_image_pixels: an image whose header claims more pixels is a failure, refused before decoding.

    Yields:
        :class:`EncodeResult` per part: float32 embeddings [rows, D] (zeros where an image failed) and failures.

    Raises:
        ValueError: a size or count is below 1.
        RuntimeError: one replica asks for more than a local Ray started here has, or Ray Data returned a
            different number of rows than it was given.
    """
    batch_size = options.batch_size_or(batch_size)
    max_image_pixels = pixel_limit(max_image_pixels)  # a wrong setting fails here, not in every replica
    for name, value in (("part_size", part_size), ("batch_size", batch_size)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    total = len(loaders)
    if total == 0:
        return
    parsed = ModelSpec.parse(spec)
    part_size, num_replicas = int(part_size), int(options.num_replicas)
    started = time.perf_counter()
    with ray_session(options) as session:
        if session == "local":
            check_replica_fits(options)
        rows = [{"position": i, "loader": cloudpickle.dumps(load)} for i, load in enumerate(loaders)]
        # One block per batch: every block is one call on whichever replica is free, which balances the pool.
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(total / batch_size))
        del rows
        embedded = dataset.map_batches(
            ImageEncoderActor,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_replicas),
            num_cpus=options.num_cpus_per_replica,
            num_gpus=options.num_gpus_per_replica,
            fn_constructor_kwargs={
                "spec": parsed,
                "batch_size": batch_size,
                "device": device,
                "mixed_precision": mixed_precision,
                "decode_workers": decode_workers,
                "num_threads": max(1, int(options.num_cpus_per_replica)),
                "max_image_pixels": max_image_pixels,
            },
            udf_modifying_row_count=False,
        )
        parts: dict[int, _Part] = {}
        next_part, done, failed = 0, 0, 0
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            positions, vectors, errors = batch["position"], batch["embedding"], batch["error"]
            for index in np.unique(positions // part_size):
                start = int(index) * part_size
                part = parts.get(int(index))
                if part is None:
                    size = min(part_size, total - start)
                    part = parts[int(index)] = _Part(np.zeros((size, vectors.shape[1]), np.float32), missing=size)
                rows_of_part = np.flatnonzero(positions // part_size == index)
                offsets = positions[rows_of_part] - start
                part.embeddings[offsets] = vectors[rows_of_part]
                for offset, row in zip(offsets, rows_of_part):
                    if errors[row]:
                        part.failures[int(offset)] = str(errors[row])
                part.missing -= len(rows_of_part)
            while next_part in parts and parts[next_part].missing == 0:
                part = parts.pop(next_part)
                done += len(part.embeddings)
                failed += len(part.failures)
                next_part += 1
                yield EncodeResult(part.embeddings, part.failures)
        if done != total:
            raise RuntimeError(f"Ray Data returned {done} of {total} image rows in order; "
                               f"{sum(p.missing for p in parts.values())} rows never came back")
    elapsed = time.perf_counter() - started
    logger.info("Ray Data: embedded %d images (%d undecodable, zero vector) in %.1f s (%.1f images/s) on %d "
                "replica(s)", total, failed, elapsed, total / max(elapsed, 1e-9), num_replicas)


def encode_images_ray(
    spec: Mapping[str, Any] | ModelSpec,
    loaders: Sequence[Callable[[], bytes]],
    *,
    options: RayOptions | None = None,
    batch_size: int = 32,
    decode_workers: int = 2,
    mixed_precision: MixedPrecision = "auto",
    device: str | None = "auto",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> EncodeResult:
    """Embed images on a Ray Data actor pool; the same result as :func:`~.encoding.encode_images`.

    See :func:`iter_encode_images_ray` for the arguments (``options`` ``None``: one CPU replica on an existing
    connection, ``RAY_ADDRESS`` or a local Ray); this returns all rows at once.

    Returns:
        :class:`EncodeResult` with float32 embeddings [len(loaders), D] in input order, zeros and a failure reason
        where an image could not be decoded. With no loaders, an empty [0, 0] array (the model is not loaded).
    """
    results = list(iter_encode_images_ray(
        spec, loaders, part_size=max(1, len(loaders)), options=options or RayOptions(), batch_size=batch_size,
        decode_workers=decode_workers, mixed_precision=mixed_precision, device=device,
        max_image_pixels=max_image_pixels))
    return results[0] if results else EncodeResult(np.zeros((0, 0), dtype=np.float32))
