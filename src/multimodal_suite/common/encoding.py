"""Batched encoders over models from :mod:`multimodal_suite.common.models`.

One loop for every pipeline: image decode/resize runs in a thread pool one batch ahead of the model, the model runs
under ``inference_mode`` and autocast, the batch size adapts to out-of-memory errors, and a progress bar shows
the work. Items that cannot be decoded come back as ``None`` rows with their reason, never dropped.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import DynamicBatcher, padded_budget_groups
from .device import MixedPrecision, autocast_context, autocast_dtype, pick_device
from .images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    decode_image,
    pixel_limit,
    resize_for_model,
    to_pixel_values,
)
from .models import LoadedModel

logger = logging.getLogger(__name__)


@dataclass
class EncodeResult:
    """Embeddings [n, d] in input order (zeros where an item failed) and the failures by position."""

    embeddings: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)


def image_features(loaded: LoadedModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """One image embedding per picture, as the model's family computes it: [B, 3, H, W] → [B, D]."""
    return loaded.family.features(loaded.module, pixel_values)


def prepare_image(
    load: Callable[[], bytes], size: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray | str:
    """Read, decode and resize one image → uint8 [size, size, 3], or the reason it cannot be used (a string).

    An image whose header claims more than ``max_pixels`` pixels is refused before it is decoded.
    """
    try:
        data = load()
    except OSError as error:  # the file vanished or is unreadable
        return f"unreadable: {error}"
    try:
        return resize_for_model(decode_image(data, min_size=size, max_pixels=max_pixels), size)
    except ImageDecodeError as error:
        return error.reason


def embed_prepared(
    loaded: LoadedModel, images: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype | None
) -> np.ndarray:
    """Embed images from :func:`prepare_image` with a model already on ``device`` → float32 [len(images), D]."""
    pixels = to_pixel_values(images, loaded.image_mean, loaded.image_std)
    with torch.inference_mode(), autocast_context(device, dtype):
        features = image_features(loaded, pixels.to(device))
    return features.float().cpu().numpy()


def encode_images(
    loaded: LoadedModel,
    loaders: Sequence[Callable[[], bytes]],
    *,
    batch_size: int = 32,
    device: str | None = "auto",
    mixed_precision: MixedPrecision = "auto",
    num_workers: int = 2,
    progress: str | None = "images",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> EncodeResult:
    """Embed images given as byte loaders; undecodable ones get a zero row and a failure reason.

    Args:
        loaded: an image-family model from :func:`~multimodal_suite.common.models.load_model`.
        loaders: one zero-argument callable per image returning its encoded bytes.
        batch_size: starting batch size (halved on OOM, grown back after successes).
        device: ``auto`` (cuda → mps → cpu) or a torch device string.
        mixed_precision: ``auto`` (fp16 on GPUs, bf16 on CPUs with bf16 instructions, else fp32), or on/off.
        num_workers: decode threads running ahead of the model.
        progress: progress-bar label, or None for no bar.
        max_image_pixels: an image whose header claims more pixels is a failure, refused before decoding.

    Returns:
        :class:`EncodeResult` with float32 embeddings [len(loaders), D].
    """
    if loaded.image_size is None:
        raise ValueError(f"model {loaded.spec.describe()} has no image size; is it an image encoder?")
    max_pixels = pixel_limit(max_image_pixels)
    torch_device = pick_device(device)
    dtype = autocast_dtype(torch_device, mixed_precision)
    loaded.module.to(torch_device)
    out = np.zeros((len(loaders), loaded.output_dim), dtype=np.float32)
    failures: dict[int, str] = {}
    positions = list(range(len(loaders)))
    batcher = DynamicBatcher(batch_size)
    bar = tqdm(total=len(loaders), desc=progress, unit="img", disable=progress is None, leave=False)

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        # Decoding is submitted up to two batches ahead of the batch the model is on, so decode overlaps compute
        # while memory stays bounded; results are consumed in input order.
        futures: dict[int, object] = {}
        next_to_submit = 0

        def prefetch(upto: int) -> None:
            nonlocal next_to_submit
            while next_to_submit < min(upto, len(loaders)):
                futures[next_to_submit] = pool.submit(prepare_image, loaders[next_to_submit],
                                                       loaded.image_size, max_pixels)
                next_to_submit += 1

        def run_batch(batch: Sequence[int]) -> list[np.ndarray | None]:
            prefetch(batch[-1] + 1 + 2 * batch_size)
            prepared = [futures[i].result() for i in batch]
            good = [j for j, item in enumerate(prepared) if not isinstance(item, str)]
            results: list[np.ndarray | None] = [None] * len(batch)
            if good:
                features = embed_prepared(loaded, [prepared[j] for j in good], torch_device, dtype)
                for row, j in enumerate(good):
                    results[j] = features[row]
            for j, item in enumerate(prepared):
                if isinstance(item, str):
                    failures[batch[j]] = item
            return results

        for batch, results in batcher.iter_batches(positions, run_batch):
            for index, vector in zip(batch, results):
                if vector is not None:
                    out[index] = vector
                futures.pop(index, None)
            bar.update(len(batch))
    bar.close()
    return EncodeResult(out, failures)


def token_lengths(loaded: LoadedModel, texts: Sequence[str]) -> list[int]:
    """Tokens per text as the model sees them (special tokens included, cut at its ``max_seq_length``)."""
    module = loaded.module
    tokenizer = getattr(module, "tokenizer", None)
    limit = int(getattr(module, "max_seq_length", 0) or 0) or None
    if tokenizer is None:
        lengths = [len(text) // 4 + 2 for text in texts]  # ~4 characters a token for English text
    else:
        lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False,
                                                  verbose=False)["input_ids"]]
    return [min(length, limit) if limit else length for length in lengths]


def encode_texts(
    loaded: LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_batch_tokens: int | None = 1024,
    device: str | None = "auto",
    progress: str | None = "texts",
) -> EncodeResult:
    """Embed texts with a sentence-transformers model in adaptive batches → float32 [len(texts), D].

    Texts run longest first, so a batch pads to similar lengths (padding is most of the cost on uneven OCR text)
    and an OOM, if any, happens at the start. A batch holds at most ``batch_size`` texts and, when
    ``max_batch_tokens`` is set, at most that many padded tokens: on a CPU, 64 texts padded to 256 tokens run
    slower than one at a time, while short texts gain from large batches.
    """
    torch_device = pick_device(device)
    module = loaded.module.to(torch_device)
    out = np.zeros((len(texts), loaded.output_dim), dtype=np.float32)
    bar = tqdm(total=len(texts), desc=progress, unit="text", disable=progress is None, leave=False)

    def run_batch(batch: Sequence[int]) -> list[np.ndarray]:
        with torch.inference_mode():
            vectors = module.encode([texts[i] for i in batch], batch_size=len(batch), convert_to_numpy=True,
                                    show_progress_bar=False, device=str(torch_device))
        return list(vectors.astype(np.float32))

    lengths = token_lengths(loaded, texts)
    order = sorted(range(len(texts)), key=lambda i: lengths[i], reverse=True)
    groups = padded_budget_groups(order, lengths, max_batch_tokens) if max_batch_tokens else [order]
    batcher = DynamicBatcher(batch_size)
    for group in groups:
        for batch, results in batcher.iter_batches(group, run_batch):
            out[list(batch)] = np.stack(results)
            bar.update(len(batch))
    bar.close()
    return EncodeResult(out)
