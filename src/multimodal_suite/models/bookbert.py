"""BookBERT: a transformer over the pages of a book that labels every page from cached page embeddings.

Each page is the concatenation ``[text, visual]`` of its text and image embeddings (built by
:func:`build_page_features`, the only place that concatenates, used by training and inference alike). The sequence
of pages is projected to ``bert_input``, given learned absolute positions and read by a transformer encoder, whose
per-page outputs are classified.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BookBERTConfig:
    """Configuration of :class:`BookBERTMultimodal2`.

    Args:
        text_dim: width of the text embedding of a page.
        visual_dim: width of the image embedding of a page.
        bert_input: width of the transformer (the concatenation is projected to it).
        max_positions: longest sequence the learned positions cover; longer books are classified in windows.
        num_layers: transformer encoder layers.
        num_heads: attention heads per layer.
        ff_dim: feed-forward width inside each layer.
        dropout: dropout in the projection and the encoder.
        num_classes: page classes.
        positional: ``absolute`` (learned positions) or ``none``.
        head_hidden_dim: 0 for a single linear classifier, else a hidden layer of this width before it.
    """

    text_dim: int
    visual_dim: int
    bert_input: int = 768
    max_positions: int = 512
    num_layers: int = 4
    num_heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.4
    num_classes: int = 9
    positional: str = "absolute"
    head_hidden_dim: int = 0

    def __post_init__(self) -> None:
        if self.positional not in ("absolute", "none"):
            raise ValueError(f"positional must be 'absolute' or 'none', got {self.positional!r}")
        if self.bert_input % self.num_heads:
            raise ValueError(f"bert_input={self.bert_input} is not divisible by num_heads={self.num_heads}")

    @property
    def input_dim(self) -> int:
        return self.text_dim + self.visual_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "BookBERTConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown BookBERT config keys: {sorted(unknown)}")
        return cls(**values)


def build_page_features(text: np.ndarray | torch.Tensor, visual: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The model input of a run of pages: ``[text, visual]`` along the last axis.

    Args:
        text: [..., text_dim] text embeddings.
        visual: [..., visual_dim] image embeddings of the same pages.

    Returns:
        [..., text_dim + visual_dim] float32 tensor.
    """
    text_t = torch.as_tensor(np.asarray(text) if not isinstance(text, torch.Tensor) else text, dtype=torch.float32)
    visual_t = torch.as_tensor(
        np.asarray(visual) if not isinstance(visual, torch.Tensor) else visual, dtype=torch.float32
    )
    if text_t.shape[:-1] != visual_t.shape[:-1]:
        raise ValueError(f"text {tuple(text_t.shape)} and visual {tuple(visual_t.shape)} cover different pages")
    return torch.cat([text_t, visual_t], dim=-1)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: self-attention (``scaled_dot_product_attention``) then a GELU feed-forward.

    Written out rather than ``nn.TransformerEncoderLayer`` because that layer's padding-mask path runs ~2.5x slower
    on CPU than the same maths through SDPA with a boolean mask, and batched padded books are the common case.
    """

    def __init__(self, width: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attention_out = nn.Linear(width, width)
        self.ff_norm = nn.LayerNorm(width)
        self.ff_in = nn.Linear(width, ff_dim)
        self.ff_out = nn.Linear(ff_dim, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        """[B, L, H] → [B, L, H]; ``attend`` is a [B, 1, 1, L] bool mask, True for keys that may be attended."""
        batch, length, width = hidden.shape
        qkv = self.qkv(self.attention_norm(hidden))  # [B, L, 3H]
        q, k, v = qkv.view(batch, length, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attend,
                                                  dropout_p=self.dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(batch, length, width)  # [B, L, H]
        hidden = hidden + self.drop(self.attention_out(attended))
        feed = self.ff_out(self.drop(F.gelu(self.ff_in(self.ff_norm(hidden)))))
        return hidden + self.drop(feed)


class BookBERTMultimodal2(nn.Module):
    """Page classifier over a book: projection → positions → transformer encoder → per-page logits."""

    def __init__(self, config: BookBERTConfig) -> None:
        super().__init__()
        self.config = config
        self.input_projection = nn.Sequential(
            nn.Linear(config.input_dim, config.bert_input),
            nn.LayerNorm(config.bert_input),
            nn.Dropout(config.dropout),
        )
        self.position_embeddings = (
            nn.Embedding(config.max_positions, config.bert_input) if config.positional == "absolute" else None
        )
        self.layers = nn.ModuleList(
            EncoderLayer(config.bert_input, config.num_heads, config.ff_dim, config.dropout)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.bert_input)
        if config.head_hidden_dim > 0:
            self.classifier = nn.Sequential(
                nn.Linear(config.bert_input, config.head_hidden_dim),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.head_hidden_dim, config.num_classes),
            )
        else:
            self.classifier = nn.Linear(config.bert_input, config.num_classes)

    def forward(self, features: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-page logits of a padded batch of books.

        Args:
            features: [B, L, text_dim + visual_dim] page features (from :func:`build_page_features`).
            padding_mask: [B, L] bool, True where a position is padding; None when nothing is padded.

        Returns:
            [B, L, num_classes] logits (padding positions hold meaningless values).
        """
        batch, length, _ = features.shape
        if length > self.config.max_positions and self.position_embeddings is not None:
            raise ValueError(
                f"sequence of {length} pages exceeds max_positions={self.config.max_positions}; classify it in windows"
            )
        hidden = self.input_projection(features)  # [B, L, H]
        if self.position_embeddings is not None:
            positions = torch.arange(length, device=features.device)
            hidden = hidden + self.position_embeddings(positions)[None]
        attend = None if padding_mask is None else ~padding_mask[:, None, None, :]  # [B, 1, 1, L]
        for layer in self.layers:
            hidden = layer(hidden, attend)  # [B, L, H]
        return self.classifier(self.final_norm(hidden))  # [B, L, C]

    def forward_sequence(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of one unpadded book: [L, D] → [L, num_classes]."""
        return self.forward(features[None])[0]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pages every ``stride`` pages that cover ``length`` pages.

    The last window is aligned to the end, so every page is covered and no window is short.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would leave pages uncovered")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


@torch.inference_mode()
def classify_sequence(
    model: BookBERTMultimodal2,
    features: torch.Tensor,
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_windows: int = 16,
) -> torch.Tensor:
    """Logits of a whole book of any length: [L, D] → [L, C].

    A book that fits in ``window`` (default: the model's position limit) is one forward pass. A longer one is cut
    into overlapping windows whose logits are averaged where they overlap; windows run in batches.
    """
    window = min(window or model.config.max_positions, model.config.max_positions)
    stride = stride or max(1, window // 2)
    length = features.shape[0]
    if length == 0:
        return features.new_zeros((0, model.config.num_classes))
    if length <= window:
        return model.forward_sequence(features)
    starts = window_starts(length, window, stride)
    totals = features.new_zeros((length, model.config.num_classes))
    counts = features.new_zeros((length, 1))
    for first in range(0, len(starts), batch_windows):
        chunk = starts[first : first + batch_windows]
        batch = torch.stack([features[s : s + window] for s in chunk])  # [W, window, D]
        logits = model(batch)  # [W, window, C]
        for start, window_logits in zip(chunk, logits):
            totals[start : start + window] += window_logits
            counts[start : start + window] += 1
    return totals / counts


@torch.inference_mode()
def classify_sequences(
    model: BookBERTMultimodal2,
    books: list[torch.Tensor],
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_windows: int = 16,
    max_batch_pages: int = 4096,
) -> list[torch.Tensor]:
    """Logits of many books: each [L_i, D] → [L_i, C], the same values as :func:`classify_sequence` per book.

    Books that fit in one window are sorted by length and run as padded, masked batches of up to
    ``max_batch_pages`` positions, so the matmuls are large enough to keep the CPU/GPU busy; longer books go
    through :func:`classify_sequence`'s overlapping windows.
    """
    window = min(window or model.config.max_positions, model.config.max_positions)
    results: list[torch.Tensor | None] = [None] * len(books)
    short = sorted((i for i, b in enumerate(books) if 0 < b.shape[0] <= window), key=lambda i: books[i].shape[0])
    batch: list[int] = []

    def flush() -> None:
        if not batch:
            return
        length = books[batch[-1]].shape[0]  # sorted ascending: the last is the longest
        features = books[batch[0]].new_zeros((len(batch), length, books[batch[0]].shape[1]))
        mask = torch.ones((len(batch), length), dtype=torch.bool, device=features.device)
        for row, index in enumerate(batch):
            n = books[index].shape[0]
            features[row, :n] = books[index]
            mask[row, :n] = False
        logits = model(features, padding_mask=mask if bool(mask.any()) else None)
        for row, index in enumerate(batch):
            results[index] = logits[row, : books[index].shape[0]]
        batch.clear()

    for index in short:
        if batch and (len(batch) + 1) * books[index].shape[0] > max_batch_pages:
            flush()
        batch.append(index)
    flush()
    for index, features in enumerate(books):
        if results[index] is None:
            results[index] = classify_sequence(model, features, window=window, stride=stride,
                                               batch_windows=batch_windows)
    return results  # type: ignore[return-value]
