import numpy as np
import pytest
import torch

from multimodal_suite.common.device import autocast_context, autocast_dtype, pick_device
from multimodal_suite.common.encoding import encode_images, encode_texts, token_lengths
from multimodal_suite.common.models import ModelSpec, ModelUnavailableError, load_model

TINY_SIGLIP = {
    "source": "config",
    "family": "siglip_vision",
    "seed": 0,
    "config": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 1, "num_attention_heads": 2},
}


def test_pick_device_prefers_explicit_then_available():
    assert pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert pick_device("auto").type == expected


def test_autocast_dtype_per_device():
    assert autocast_dtype(torch.device("cuda")) is torch.float16
    assert autocast_dtype(torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), mixed_precision=False) is None
    with autocast_context(torch.device("cpu"), torch.bfloat16):
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype is torch.bfloat16


def test_spec_parse_validates_and_hash_is_stable():
    spec = ModelSpec.parse(TINY_SIGLIP)
    assert spec.spec_hash == ModelSpec.parse(dict(TINY_SIGLIP)).spec_hash
    changed = dict(TINY_SIGLIP, seed=1)
    assert ModelSpec.parse(changed).spec_hash != spec.spec_hash
    with pytest.raises(ValueError, match="'source' must be one of"):
        ModelSpec.parse({"source": "s3", "family": "clip"})
    with pytest.raises(ValueError, match="needs a 'id' key"):
        ModelSpec.parse({"source": "hf", "family": "clip"})
    # keys of another source (left by a soft-merged override) do not enter the spec
    merged = ModelSpec.parse({**TINY_SIGLIP, "id": "google/siglip-so400m-patch14-384"})
    assert merged.id is None and merged.spec_hash == spec.spec_hash


def test_config_models_are_seeded_and_describe_random_weights():
    first, second = load_model(TINY_SIGLIP), load_model(TINY_SIGLIP)
    for a, b in zip(first.module.parameters(), second.module.parameters()):
        assert torch.equal(a, b)
    assert first.output_dim == 32 and first.image_size == 32
    assert "RANDOM weights" in first.spec.describe()


def test_hub_model_offline_raises_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as error:
        load_model({"source": "hf", "family": "siglip_vision", "id": "google/siglip-so400m-patch14-384"})
    message = str(error.value)
    assert "--env demo" in message and "source: path" in message


def test_missing_local_path_is_clear(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_model({"source": "path", "family": "clip", "path": str(tmp_path / "nope")})


def test_bundled_minilm_embeds_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model({"source": "bundled", "name": "all-MiniLM-L6-v2"})
    assert loaded.output_dim == 384
    result = encode_texts(loaded, ["a cat sat on the mat", "a cat sat on a mat", "stock market prices"],
                          batch_size=2, progress=None)
    vectors = result.embeddings / np.linalg.norm(result.embeddings, axis=1, keepdims=True)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2  # real semantic weights, not random


def test_token_budget_batches_give_the_same_vectors_in_input_order():
    loaded = load_model({"source": "bundled", "name": "all-MiniLM-L6-v2"})
    texts = ["word " * n for n in (3, 200, 1, 40, 90, 7, 0, 300)]
    one_by_one = encode_texts(loaded, texts, batch_size=1, max_batch_tokens=None, progress=None).embeddings
    budgeted = encode_texts(loaded, texts, batch_size=8, max_batch_tokens=256, progress=None).embeddings
    np.testing.assert_allclose(budgeted, one_by_one, atol=1e-5)
    lengths = token_lengths(loaded, texts)
    assert max(lengths) == loaded.module.max_seq_length and lengths[6] == 2  # [CLS] [SEP] for the empty text


def test_encode_images_flags_undecodable_and_keeps_order():
    import io

    from PIL import Image

    def jpeg(color):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 60), color).save(buffer, format="JPEG")
        return buffer.getvalue()

    good = [jpeg((255, 0, 0)), jpeg((0, 0, 255))]
    loaders = [lambda: good[0], lambda: b"", lambda: good[1][:200], lambda: good[1]]
    loaded = load_model(TINY_SIGLIP)
    result = encode_images(loaded, loaders, batch_size=2, progress=None)
    assert set(result.failures) == {1, 2}
    assert "empty" in result.failures[1]
    assert np.all(result.embeddings[1] == 0) and np.all(result.embeddings[2] == 0)
    single = encode_images(loaded, [loaders[3]], batch_size=1, progress=None, mixed_precision=False)
    np.testing.assert_allclose(result.embeddings[3], single.embeddings[0], atol=0.05)
