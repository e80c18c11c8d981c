"""Image encoder families: ``siglip_vision`` and ``clip`` (transformers), ``timm``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from .registry import ImagePreprocessing, ModelFamily, register_family
from .spec import ModelSpec

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN, CLIP_STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SiglipVision(ModelFamily):
    """SigLIP's vision tower (``SiglipVisionModel``); the embedding is its pooled output."""

    name = "siglip_vision"

    def build_from_config(self, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
        from transformers import SiglipVisionConfig, SiglipVisionModel

        return SiglipVisionModel(SiglipVisionConfig(**config))

    def load_pretrained(self, location: str, spec: ModelSpec, local_only: bool) -> torch.nn.Module:
        from transformers import SiglipVisionModel

        return SiglipVisionModel.from_pretrained(location, local_files_only=local_only)

    def output_dim(self, module: torch.nn.Module) -> int:
        return int(module.config.hidden_size)

    def preprocessing(self, module: torch.nn.Module, spec: ModelSpec) -> ImagePreprocessing:
        return ImagePreprocessing(int(module.config.image_size), SIGLIP_MEAN, SIGLIP_STD)

    def features(self, module: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return module(pixel_values=inputs).pooler_output


class Clip(ModelFamily):
    """A full ``CLIPModel``; the embedding is its projected image features."""

    name = "clip"

    def build_from_config(self, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
        from transformers import CLIPConfig, CLIPModel

        return CLIPModel(CLIPConfig(**config))

    def load_pretrained(self, location: str, spec: ModelSpec, local_only: bool) -> torch.nn.Module:
        from transformers import CLIPModel

        return CLIPModel.from_pretrained(location, local_files_only=local_only)

    def output_dim(self, module: torch.nn.Module) -> int:
        return int(module.config.projection_dim)

    def preprocessing(self, module: torch.nn.Module, spec: ModelSpec) -> ImagePreprocessing:
        return ImagePreprocessing(int(module.config.vision_config.image_size), CLIP_MEAN, CLIP_STD)

    def features(self, module: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        features = module.get_image_features(pixel_values=inputs)
        # transformers versions differ: a tensor, or an output object holding it
        return features if isinstance(features, torch.Tensor) else features.pooler_output


class Timm(ModelFamily):
    """Any ``timm`` model; ``config`` holds ``model_name`` plus ``timm.create_model`` keyword arguments.

    A ``source: path`` spec is a directory with ``model.safetensors`` and names the architecture in the option
    ``model_name`` (default ``resnet50``). The embedding is the model's output: pooled features when built with
    ``num_classes: 0``.
    """

    name = "timm"

    def build_from_config(self, config: Mapping[str, Any], seed: int) -> torch.nn.Module:
        import timm

        config = dict(config)
        return timm.create_model(config.pop("model_name"), pretrained=False, **config)

    def load_pretrained(self, location: str, spec: ModelSpec, local_only: bool) -> torch.nn.Module:
        import timm

        if spec.source == "path":
            return timm.create_model(spec.options.get("model_name", "resnet50"), pretrained=True,
                                     pretrained_cfg_overlay={"file": str(Path(location) / "model.safetensors")})
        return timm.create_model(f"hf-hub:{location}", pretrained=True)

    def output_dim(self, module: torch.nn.Module) -> int:
        return int(module.num_features if getattr(module, "num_classes", 0) == 0 else module.num_classes)

    def preprocessing(self, module: torch.nn.Module, spec: ModelSpec) -> ImagePreprocessing:
        cfg = getattr(module, "pretrained_cfg", {}) or {}
        size = spec.options.get("image_size") or (cfg.get("input_size") or (3, 224, 224))[-1]
        return ImagePreprocessing(int(size), tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))

    def features(self, module: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return module(inputs)


for _entry in (SiglipVision(), Clip(), Timm()):
    register_family(_entry)
