"""Segmentation model families (ultralytics): ``sam`` (SAM / MobileSAM / SAM 2), ``fastsam``, ``yolo_seg``.

Specs:

- ``{source: path, family: sam, path: sam2.1_b.pt}`` — a local weights file, or a bare ultralytics file name found
  in ultralytics' weights directory. Nothing is downloaded unless the spec says ``allow_download: true`` (then
  ultralytics fetches a missing bare name from its GitHub releases); a missing file raises the one offline error.
- ``{source: config, family: sam, config: {architecture: mobile_sam}, seed: 0}`` (``yolo_seg``:
  ``architecture: yolo26n-seg``) — the architecture with seeded RANDOM weights, for offline tests of a backend's
  code path; ultralytics builds FastSAM only from a weights file.

ultralytics is imported with ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=false`` (unless already set) and its
analytics off, so it never probes the network. The module is ultralytics' own: a SAM ``nn.Module`` for ``sam``,
an ultralytics ``Model`` for the others.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .registry import ModelFamily, register_family
from .spec import ModelSpec, ModelUnavailableError, offline_error

logger = logging.getLogger(__name__)


def import_ultralytics_offline() -> None:
    """Import ultralytics with its network features off.

    ``YOLO_OFFLINE`` skips the DNS probe ultralytics runs at import and with it analytics, crash reports and
    update checks; ``YOLO_AUTOINSTALL=false`` stops it pip-installing extras at run time. When ultralytics was
    imported before these were set, analytics are switched off in-process.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from ultralytics.utils import events

    events.events.enabled = False


def resolve_weights(spec: ModelSpec) -> str:
    """The local file a ``source: path`` spec names: the path itself, else the bare name in ultralytics' weights
    directory, else (with ``allow_download``) the file ultralytics fetches.

    Raises:
        ModelUnavailableError: no local copy, and downloading is off or failed. Never waits on the network when
            ``allow_download`` is off.
    """
    import_ultralytics_offline()
    from ultralytics.utils import SETTINGS

    weights = str(spec.path)
    allow_download = bool(spec.options.get("allow_download", False))
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path)
    weights_dir = Path(SETTINGS["weights_dir"])
    bare_name = path.name == weights
    if bare_name and (weights_dir / path.name).is_file():
        logger.info("%s weights %r found in ultralytics' weights directory %s", spec.family, weights, weights_dir)
        return str(weights_dir / path.name)
    where = f"no such file, nor in ultralytics' weights directory {weights_dir}" if bare_name else "no such file"
    if not (allow_download and bare_name):
        off = "; downloads are off (`allow_download: true` in the spec lets ultralytics fetch it)" if bare_name else ""
        raise offline_error(spec, reason=f"({where}{'' if allow_download else off})")
    from ultralytics.utils.downloads import attempt_download_asset

    try:
        fetched = Path(attempt_download_asset(path.name))
    except Exception as error:  # noqa: BLE001 - network, HTTP and disk errors all mean "not available here"
        raise offline_error(spec, reason=f"({where}; download failed: {type(error).__name__})") from error
    if not fetched.is_file():
        raise offline_error(spec, reason=f"({where}; ultralytics has no release asset of that name)")
    return str(fetched)


def _architecture(config: Mapping[str, Any], family: str) -> str:
    """The one key of an ultralytics family's config."""
    if set(config) != {"architecture"}:
        raise ValueError(f"{family} config takes exactly one key, 'architecture'; got {sorted(config)}")
    return str(config["architecture"])


def _unloadable(spec: ModelSpec, location: str, error: Exception) -> ModelUnavailableError:
    return offline_error(spec, reason=f"({location} is not loadable: {type(error).__name__}: {error})")


class UltralyticsFamily(ModelFamily):
    """What the ultralytics families share: weights files found through :func:`resolve_weights`, no embedding."""

    sources = ("path", "config")
    options = frozenset({"allow_download"})

    def resolve_path(self, spec: ModelSpec) -> str:
        return resolve_weights(spec)

    def output_dim(self, module: torch.nn.Module) -> None:
        return None


class Sam(UltralyticsFamily):
    """SAM, MobileSAM, SAM 2 and 2.1; ultralytics picks the architecture from the weights file's name."""

    name = "sam"

    def build_from_config(self, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
        import_ultralytics_offline()
        from ultralytics.models.sam.build import sam_model_map

        architecture = _architecture(config, self.name)
        key = architecture if architecture.endswith(".pt") else f"{architecture}.pt"
        if key not in sam_model_map:
            raise ValueError(f"sam config: unknown architecture {architecture!r}; "
                             f"known: {sorted(name.removesuffix('.pt') for name in sam_model_map)}")
        return sam_model_map[key](None)

    def load_pretrained(self, location: str, spec: ModelSpec, local_only: bool) -> torch.nn.Module:
        import_ultralytics_offline()
        from ultralytics.models.sam.build import build_sam, sam_model_map

        if not any(location.endswith(name) for name in sam_model_map):
            raise ValueError(
                f"SAM weights file {location!r}: ultralytics picks the SAM architecture from the file name, which "
                f"must end with one of {sorted(sam_model_map)}; rename the file accordingly"
            )
        try:
            return build_sam(location)
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file fails in many ways
            raise _unloadable(spec, location, error) from error


class FastSam(UltralyticsFamily):
    """FastSAM (a YOLO segmentation network trained for "segment everything"); weights files only."""

    name = "fastsam"
    sources = ("path",)

    def build_from_config(self, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
        raise ValueError("ultralytics builds FastSAM only from a weights file; random weights are available for "
                         "the sam and yolo_seg families")

    def load_pretrained(self, location: str, spec: ModelSpec, local_only: bool) -> torch.nn.Module:
        import_ultralytics_offline()
        from ultralytics import FastSAM

        try:
            return FastSAM(location)
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file fails in many ways
            raise _unloadable(spec, location, error) from error


class YoloSeg(UltralyticsFamily):
    """An ultralytics YOLO segmentation model (``yolo11n-seg``, ``yolo26n-seg``, ...)."""

    name = "yolo_seg"

    def build_from_config(self, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
        import_ultralytics_offline()
        from ultralytics import YOLO

        return YOLO(f"{Path(_architecture(config, self.name)).stem}.yaml", task="segment")

    def load_pretrained(self, location: str, spec: ModelSpec, local_only: bool) -> torch.nn.Module:
        import_ultralytics_offline()
        from ultralytics import YOLO

        try:
            return YOLO(location, task="segment")
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file fails in many ways
            raise _unloadable(spec, location, error) from error


for _entry in (Sam(), FastSam(), YoloSeg()):
    register_family(_entry)
