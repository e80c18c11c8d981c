"""Spec → torch module through the spec's family entry: one loading path for real and demo models."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .registry import ModelFamily, family
from .spec import ModelSpec, ModelUnavailableError, bundled_model_path, hub_offline, offline_error

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A module ready for inference plus what callers need to feed it.

    Attributes:
        output_dim: width of one output vector (None for models that give none, such as segmenters).
        image_size: square input side for image encoders, None otherwise.
    """

    module: torch.nn.Module
    spec: ModelSpec
    output_dim: int | None
    image_size: int | None = None
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def spec_hash(self) -> str:
        return self.spec.spec_hash

    @property
    def family(self) -> ModelFamily:
        """The registry entry of the model's family."""
        return family(self.spec.family)


def _from_config(entry: ModelFamily, spec: ModelSpec) -> torch.nn.Module:
    # A forked RNG: seeding for the build leaves the caller's random stream as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return entry.build_from_config(spec.config, spec.seed)


def _from_hub(entry: ModelFamily, spec: ModelSpec) -> torch.nn.Module:
    try:
        # The local cache first: a warm cache works offline and never waits on network timeouts.
        return entry.load_pretrained(spec.id, spec, local_only=True)
    except Exception as cache_miss:  # noqa: BLE001 - any cache miss means "try the hub"
        if hub_offline():
            raise offline_error(spec, cache_miss) from cache_miss
        try:
            return entry.load_pretrained(spec.id, spec, local_only=False)
        except Exception as error:  # noqa: BLE001 - network, auth and missing-repo errors all mean the same here
            raise offline_error(spec, error) from error


def build_module(spec: Mapping[str, Any] | ModelSpec) -> torch.nn.Module:
    """Turn a spec into its torch module, in eval mode on the CPU; logs which weights were used.

    Raises:
        ModelUnavailableError: the weights are not here (a missing path; a hub id offline or not on the hub).
    """
    spec = ModelSpec.parse(spec)
    entry = family(spec.family)
    if spec.source == "config":
        module = _from_config(entry, spec)
    elif spec.source == "path":
        location = entry.resolve_path(spec)
        if not Path(location).exists():
            raise ModelUnavailableError(f"Model path {spec.path!r} does not exist (spec: {spec.to_dict()})")
        module = entry.load_pretrained(location, spec, local_only=True)
    elif spec.source == "bundled":
        module = entry.load_pretrained(str(bundled_model_path(spec.name)), spec, local_only=True)
    else:
        module = _from_hub(entry, spec)
    logger.info("Model: %s", spec.describe())
    return module.eval()


def load_model(spec: Mapping[str, Any] | ModelSpec) -> LoadedModel:
    """Parse ``spec``, build its module and describe its input/output contract.

    The spec options ``max_seq_length`` (text models) and ``image_size`` (image encoders) override the model's own.
    """
    parsed = ModelSpec.parse(spec)
    entry = family(parsed.family)
    module = build_module(parsed)
    preprocessing = entry.preprocessing(module, parsed)
    if parsed.options.get("max_seq_length") and hasattr(module, "max_seq_length"):
        module.max_seq_length = int(parsed.options["max_seq_length"])
    loaded = LoadedModel(module=module, spec=parsed, output_dim=entry.output_dim(module))
    if preprocessing is not None:
        loaded.image_size = preprocessing.size
        loaded.image_mean, loaded.image_std = preprocessing.mean, preprocessing.std
    if parsed.options.get("image_size"):
        loaded.image_size = int(parsed.options["image_size"])
    return loaded
