"""Model families: how each kind of model is built, loaded, fed and read, one registry entry per family.

The loader (:mod:`~multimodal_suite.common.models.loading`) and the encoders only ever ask a spec's entry, so a new
family is one :class:`ModelFamily` subclass and one :func:`register_family` call::

    class TinyConv(ModelFamily):
        name = "tiny_conv"

        def build_from_config(self, config, seed):
            return torch.nn.Sequential(torch.nn.Conv2d(3, config["width"], 3), torch.nn.AdaptiveAvgPool2d(1),
                                       torch.nn.Flatten())

        def load_pretrained(self, location, spec, local_only):
            return torch.load(location, weights_only=False)

        def output_dim(self, module):
            return module[0].out_channels

        def preprocessing(self, module, spec):
            return ImagePreprocessing(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

        def features(self, module, inputs):
            return module(inputs)

    register_family(TinyConv())
    load_model({"source": "config", "family": "tiny_conv", "config": {"width": 8}, "seed": 0}).output_dim  # 8
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, KeysView, Mapping

import torch

if TYPE_CHECKING:
    from .spec import ModelSpec

SOURCES = ("hf", "path", "config", "bundled")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image encoder wants its pictures: square side in pixels and per-channel RGB mean / std."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ModelFamily(ABC):
    """One kind of model: how to build, load, feed and read it.

    Attributes:
        name: the ``family`` a spec names.
        sources: the spec sources this family can be loaded from.
        options: the spec options this family reads, so a misspelt one is an error; None leaves them unchecked.
    """

    name: ClassVar[str]
    sources: ClassVar[tuple[str, ...]] = SOURCES
    options: ClassVar[frozenset[str] | None] = None

    @abstractmethod
    def build_from_config(self, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
        """The family's architecture from a config dict with random weights.

        Called with torch's generator seeded from ``seed`` (in a forked RNG state); ``seed`` is passed for
        libraries that draw from their own generator.
        """

    @abstractmethod
    def load_pretrained(self, location: str, spec: ModelSpec, local_only: bool) -> torch.nn.Module:
        """Pretrained weights from a hub id or a local path (``location``); ``local_only`` forbids the network."""

    @abstractmethod
    def output_dim(self, module: torch.nn.Module) -> int | None:
        """Width of one output vector, or None for models that give no embedding (segmenters)."""

    def preprocessing(self, module: torch.nn.Module, spec: ModelSpec) -> ImagePreprocessing | None:
        """Image size / mean / std for image encoders; None for models that take no images."""
        return None

    def features(self, module: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """One embedding per picture for image encoders: pixel values [B, 3, H, W] → [B, D]."""
        raise ValueError(f"{self.name!r} is not an image encoder family")

    def resolve_path(self, spec: ModelSpec) -> str:
        """The local file or directory a ``source: path`` spec names (families with their own lookup override)."""
        return str(spec.path)


_REGISTRY: dict[str, ModelFamily] = {}

#: Names of the registered families (a live view: a family registered later is in it).
FAMILIES: KeysView[str] = _REGISTRY.keys()


def register_family(entry: ModelFamily) -> ModelFamily:
    """Add ``entry`` to the registry under ``entry.name`` and return it.

    Raises:
        ValueError: a family of that name is registered already, or the entry names an unknown source.
    """
    if entry.name in _REGISTRY:
        raise ValueError(f"model family {entry.name!r} is registered already ({type(_REGISTRY[entry.name]).__name__})")
    unknown = sorted(set(entry.sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"model family {entry.name!r}: unknown source(s) {unknown}; known: {SOURCES}")
    _REGISTRY[entry.name] = entry
    return entry


def family(name: str) -> ModelFamily:
    """The registered entry of family ``name``.

    Raises:
        ValueError: no such family; the message lists the registered ones.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model family {name!r}; registered: {sorted(FAMILIES)}") from None
