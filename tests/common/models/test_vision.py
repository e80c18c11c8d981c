import io

import numpy as np
import pytest
import torch
from PIL import Image

from multimodal_suite.common.encoding import encode_images, image_features
from multimodal_suite.common.models import ModelUnavailableError, load_model
from multimodal_suite.common.models.vision import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

TINY_SIGLIP = {
    "source": "config",
    "family": "siglip_vision",
    "seed": 0,
    "config": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 1, "num_attention_heads": 2},
}
TINY_CLIP = {
    "source": "config",
    "family": "clip",
    "seed": 0,
    "config": {"projection_dim": 16,
               "vision_config": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
                                 "num_hidden_layers": 1, "num_attention_heads": 2},
               "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "vocab_size": 100}},
}
TINY_TIMM = {"source": "config", "family": "timm", "seed": 0, "config": {"model_name": "test_resnet", "num_classes": 0}}
TIMM_HEAD = {**TINY_TIMM, "config": {"model_name": "test_resnet", "num_classes": 12}}


def _jpeg(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 60), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("spec, dim, size, mean, std", [
    (TINY_SIGLIP, 32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    (TINY_CLIP, 16, 32, CLIP_MEAN, CLIP_STD),
    (TIMM_HEAD, 12, 160, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # test_resnet's own pretrained_cfg
], ids=["siglip_vision", "clip", "timm"])
def test_built_from_config_gives_the_declared_width_and_preprocessing(spec, dim, size, mean, std):
    loaded = load_model(spec)

    assert loaded.output_dim == dim
    assert (loaded.image_size, loaded.image_mean, loaded.image_std) == (size, mean, std)
    pixels = torch.rand(2, 3, loaded.image_size, loaded.image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        features = image_features(loaded, pixels)
    assert features.shape == (2, dim)
    assert "RANDOM weights" in loaded.spec.describe()


def test_config_models_are_seeded():
    first, second = load_model(TINY_SIGLIP), load_model(TINY_SIGLIP)
    for a, b in zip(first.module.parameters(), second.module.parameters()):
        assert torch.equal(a, b)


def test_timm_without_a_head_gives_pooled_features_and_imagenet_defaults():
    loaded = load_model(TINY_TIMM)
    assert loaded.output_dim == loaded.module.num_features == 96
    loaded.module.pretrained_cfg = {}  # a model without its own normalisation falls back to ImageNet's
    preprocessing = loaded.family.preprocessing(loaded.module, loaded.spec)
    assert (preprocessing.size, preprocessing.mean, preprocessing.std) == (224, IMAGENET_MEAN, IMAGENET_STD)


def test_image_size_option_overrides_the_models_own():
    assert load_model({**TINY_TIMM, "image_size": 96}).image_size == 96
    assert load_model({**TINY_SIGLIP, "image_size": 48}).image_size == 48


@pytest.mark.parametrize("name, hub_id", [("siglip_vision", "google/siglip-so400m-patch14-384"),
                                          ("clip", "openai/clip-vit-base-patch32"),
                                          ("timm", "timm/resnet50.a1_in1k")])
def test_hub_model_offline_raises_one_clear_error(name, hub_id, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as error:
        load_model({"source": "hf", "family": name, "id": hub_id})
    message = str(error.value)
    assert f"Cannot load {name} model {hub_id!r} from the Hugging Face hub" in message
    assert "--env demo" in message and "source: path" in message


def test_encode_images_flags_undecodable_and_keeps_order():
    good = [_jpeg((255, 0, 0)), _jpeg((0, 0, 255))]
    loaders = [lambda: good[0], lambda: b"", lambda: good[1][:200], lambda: good[1]]
    loaded = load_model(TINY_SIGLIP)
    result = encode_images(loaded, loaders, batch_size=2, progress=None)
    assert set(result.failures) == {1, 2}
    assert "empty" in result.failures[1]
    assert np.all(result.embeddings[1] == 0) and np.all(result.embeddings[2] == 0)
    single = encode_images(loaded, [loaders[3]], batch_size=1, progress=None, mixed_precision=False)
    np.testing.assert_allclose(result.embeddings[3], single.embeddings[0], atol=0.05)
