import io

import numpy as np
import pytest
import torch
from PIL import Image

from multimodal_suite.common.encoding import encode_images
from multimodal_suite.common.models import (
    FAMILIES,
    ImagePreprocessing,
    ModelFamily,
    ModelSpec,
    build_module,
    family,
    load_model,
    register_family,
    registry,
)


class ToyConv(ModelFamily):
    """One convolution and a global average pool: [B, 3, H, W] → [B, width]."""

    name = "toy_conv"
    sources = ("path", "config")

    def build_from_config(self, config, seed):
        return torch.nn.Sequential(torch.nn.Conv2d(3, int(config["width"]), 3), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten())

    def load_pretrained(self, location, spec, local_only):
        module = self.build_from_config(spec.options, 0)
        module.load_state_dict(torch.load(location))
        return module

    def output_dim(self, module):
        return module[0].out_channels

    def preprocessing(self, module, spec):
        return ImagePreprocessing(16, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))

    def features(self, module, inputs):
        return module(inputs)


@pytest.fixture
def toy_family():
    entry = register_family(ToyConv())
    yield entry
    registry._REGISTRY.pop(entry.name)  # leave the registry as every other test expects it


def _jpeg(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 24), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_builtin_families_are_registered():
    assert {"siglip_vision", "clip", "timm", "sentence_transformer", "sam", "fastsam", "yolo_seg"} <= set(FAMILIES)
    assert family("clip").name == "clip"


def test_unknown_family_lookup_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown model family 'resnet'; registered: \[") as error:
        family("resnet")
    assert "'timm'" in str(error.value)


def test_a_family_registers_once():
    with pytest.raises(ValueError, match="'clip' is registered already"):
        register_family(type(family("clip"))())

    class BadSource(ToyConv):
        name = "bad_source"
        sources = ("s3",)

    with pytest.raises(ValueError, match=r"unknown source\(s\) \['s3'\]"):
        register_family(BadSource())
    assert "bad_source" not in FAMILIES


def test_new_family_works_end_to_end(toy_family, tmp_path):
    spec = {"source": "config", "family": "toy_conv", "config": {"width": 6}, "seed": 3}
    assert "toy_conv" in FAMILIES

    loaded = load_model(spec)

    assert loaded.family is toy_family and loaded.output_dim == 6
    assert (loaded.image_size, loaded.image_mean, loaded.image_std) == (16, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    assert not loaded.module.training
    result = encode_images(loaded, [lambda: _jpeg((250, 10, 10)), lambda: b"", lambda: _jpeg((10, 10, 250))],
                           batch_size=2, device="cpu", mixed_precision=False, progress=None)
    assert result.embeddings.shape == (3, 6) and set(result.failures) == {1}
    assert not np.allclose(result.embeddings[0], result.embeddings[2])

    # the same weights saved to a file load through the family's `source: path`
    weights = tmp_path / "toy.pt"
    torch.save(loaded.module.state_dict(), weights)
    reloaded = load_model({"source": "path", "family": "toy_conv", "path": str(weights), "width": 6})
    for a, b in zip(loaded.module.parameters(), reloaded.module.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="family 'toy_conv' loads from source path or config, not 'hf'"):
        ModelSpec.parse({"source": "hf", "family": "toy_conv", "id": "a/b"})


def test_config_builds_are_seeded_and_leave_the_callers_random_stream(toy_family):
    spec = {"source": "config", "family": "toy_conv", "config": {"width": 4}, "seed": 0}
    first, second = build_module(spec), build_module(spec)
    other = build_module({**spec, "seed": 1})

    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    assert not torch.equal(first[0].weight, other[0].weight)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_module(spec)
    assert torch.equal(torch.rand(3), expected)


def test_non_image_family_has_no_image_features():
    with pytest.raises(ValueError, match="'sentence_transformer' is not an image encoder family"):
        family("sentence_transformer").features(torch.nn.Identity(), torch.zeros(1, 3, 8, 8))
