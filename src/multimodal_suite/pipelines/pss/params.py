"""Typed parameters of the pss pipelines: one frozen dataclass per section of ``conf/base/parameters_pss.yml``.

Nodes build them at their boundary with :func:`~multimodal_suite.common.params.from_params`; the defaults are the
values of ``conf/base`` with no ``PSS_*`` environment variable set (a test holds them to it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from multimodal_suite.common.comics.annotations import CLASS_NAMES, NUM_CLASSES
from multimodal_suite.common.device import MixedPrecision
from multimodal_suite.common.images import DEFAULT_MAX_IMAGE_PIXELS
from multimodal_suite.common.models import ModelSpec
from multimodal_suite.common.ray import RayOptions

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class PrecomputeParams:
    """``pss.precompute``: which books are read and how their pages are embedded.

    Args:
        book_source: ``annotations`` (the books the annotation file lists) or ``scan`` (every folder on disk).
        image_model: model spec of the page image encoder.
        text_model: model spec of the OCR text encoder.
        expected_visual_dim: when set, the image model's output width must be this (``PSS_VIS_DIM``).
        expected_text_dim: when set, the text model's output width must be this (``PSS_TXT_DIM``).
        batch_size: images per model batch.
        text_batch_size: texts per model batch.
        text_max_batch_tokens: padded tokens per text batch.
        mixed_precision: ``auto`` (reduced precision where the device has it natively), or force it on/off.
        device: ``auto`` (cuda → mps → cpu) or a torch device string.
        decode_workers: threads decoding images ahead of the model.
        max_image_pixels: a page whose image header claims more pixels is rejected without being decoded.
        part_size: pages per shard part (the unit an interrupted run can lose).
        engine: ``in_process`` (this process) or ``ray_data`` (a Ray Data actor pool of model replicas).
        ray: Ray Data options of the ``ray_data`` engine.
    """

    book_source: Literal["annotations", "scan"] = "annotations"
    image_model: ModelSpec = ModelSpec(source="hf", family="siglip_vision", id="google/siglip-so400m-patch14-384")
    text_model: ModelSpec = ModelSpec(source="hf", family="sentence_transformer", id="Qwen/Qwen3-Embedding-0.6B")
    expected_visual_dim: int | None = None
    expected_text_dim: int | None = None
    batch_size: int = 32
    text_batch_size: int = 64
    text_max_batch_tokens: int = 1024
    mixed_precision: MixedPrecision = "auto"
    device: str = "auto"
    decode_workers: int = 4
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    part_size: int = 1024
    engine: Literal["in_process", "ray_data"] = "in_process"
    ray: RayOptions = field(default_factory=RayOptions)


@dataclass(frozen=True)
class ModelParams:
    """``pss.model``: the BookBERT architecture (the embedding widths come from the precomputed shards).

    Args:
        bert_input: width of the transformer.
        max_positions: longest sequence the learned positions cover.
        num_layers: transformer encoder layers.
        num_heads: attention heads per layer.
        ff_dim: feed-forward width inside each layer.
        dropout: dropout in the projection and the encoder.
        num_classes: page classes; must be the number the annotations define.
        positional: ``absolute`` (learned positions) or ``none``.
        head_hidden_dim: 0 for a single linear classifier, else a hidden layer of this width before it (never
            set by ``PSS_HIDDEN``, which the original scripts did not use).
    """

    bert_input: int = 768
    max_positions: int = 512
    num_layers: int = 4
    num_heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.4
    num_classes: int = NUM_CLASSES
    positional: Literal["absolute", "none"] = "absolute"
    head_hidden_dim: int = 0

    def __post_init__(self) -> None:
        if self.num_classes != NUM_CLASSES:
            raise ValueError(f"num_classes={self.num_classes} but the annotations define {NUM_CLASSES} classes "
                             f"({', '.join(CLASS_NAMES)}); PSS_NUM_CLASSES must be {NUM_CLASSES}")


@dataclass(frozen=True)
class SplitParams:
    """``pss.split``: how labelled books are shared out between train, val and test (whole books).

    Args:
        seed: seed of the shuffle.
        val_fraction: share of the books in val (at least one book).
        test_fraction: share of the books in test (at least one book).
    """

    seed: int = 42
    val_fraction: float = 0.15
    test_fraction: float = 0.15


@dataclass(frozen=True)
class TrainParams:
    """``pss.train``: the BookBERT training run.

    Args:
        seed: seed of the weights, the book order and the windows.
        device: ``auto`` (cuda → mps → cpu) or a torch device string.
        epochs: most epochs run.
        books_per_batch: books per optimiser step.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear warm-up.
        schedule: decay after warm-up, ``cosine`` or ``inverse_sqrt``.
        grad_clip: largest gradient norm.
        patience: epochs without val-loss improvement before stopping.
    """

    seed: int = 42
    device: str = "auto"
    epochs: int = 60
    books_per_batch: int = 8
    learning_rate: float = 2.0e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: Literal["cosine", "inverse_sqrt"] = "cosine"
    grad_clip: float = 1.0
    patience: int = 10


@dataclass(frozen=True)
class BaselineParams:
    """``pss.baseline``: the single-page logistic regression.

    Args:
        C: inverse regularisation strength.
        max_iter: most solver iterations.
    """

    C: float = 1.0
    max_iter: int = 2000


@dataclass(frozen=True)
class ClassifyParams:
    """``pss.classify``: BookBERT inference over whole books.

    Args:
        window: books longer than this are classified in overlapping windows; ``None``: the model's position limit.
        stride: step between windows; ``None``: half the window.
        batch_windows: windows per forward pass.
        max_batch_pages: books shorter than the window run as padded batches of up to this many pages.
        device: ``auto`` (cuda → mps → cpu) or a torch device string.
        mixed_precision: autocast the forward pass: ``auto`` (where the device has it natively), on or off.
        split: the split ``evaluate_pss`` scores.
    """

    window: int | None = 512
    stride: int | None = 256
    batch_windows: int = 16
    max_batch_pages: int = 4096
    device: str = "auto"
    mixed_precision: MixedPrecision = False
    split: Split = "test"


PARAMETER_SECTIONS: dict[str, type] = {
    "pss.precompute": PrecomputeParams,
    "pss.model": ModelParams,
    "pss.split": SplitParams,
    "pss.train": TrainParams,
    "pss.baseline": BaselineParams,
    "pss.classify": ClassifyParams,
}
