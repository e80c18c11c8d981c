import numpy as np
import pytest

from multimodal_suite.common.encoding import encode_texts, token_lengths
from multimodal_suite.common.models import ModelUnavailableError, load_model

TINY_TEXT = {"source": "config", "family": "sentence_transformer", "seed": 0,
             "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}}
MINILM = {"source": "bundled", "name": "all-MiniLM-L6-v2"}


def test_built_from_config_gives_the_declared_width_and_no_image_settings():
    loaded = load_model({**TINY_TEXT, "max_seq_length": 40})

    assert loaded.output_dim == 32 and loaded.image_size is None
    assert loaded.family.preprocessing(loaded.module, loaded.spec) is None
    assert loaded.module.max_seq_length == 40
    vectors = encode_texts(loaded, ["a cat", "a much longer sentence about a dog"], progress=None).embeddings
    assert vectors.shape == (2, 32) and not np.allclose(vectors[0], vectors[1])


def test_hub_model_offline_raises_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as error:
        load_model({"source": "hf", "family": "sentence_transformer", "id": "sentence-transformers/all-mpnet-base-v2"})
    message = str(error.value)
    assert "'sentence-transformers/all-mpnet-base-v2' from the Hugging Face hub" in message
    assert "--env demo" in message and "source: path" in message


def test_bundled_minilm_embeds_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model(MINILM)
    assert loaded.output_dim == 384
    result = encode_texts(loaded, ["a cat sat on the mat", "a cat sat on a mat", "stock market prices"],
                          batch_size=2, progress=None)
    vectors = result.embeddings / np.linalg.norm(result.embeddings, axis=1, keepdims=True)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2  # real semantic weights, not random


def test_token_budget_batches_give_the_same_vectors_in_input_order():
    loaded = load_model(MINILM)
    texts = ["word " * n for n in (3, 200, 1, 40, 90, 7, 0, 300)]
    one_by_one = encode_texts(loaded, texts, batch_size=1, max_batch_tokens=None, progress=None).embeddings
    budgeted = encode_texts(loaded, texts, batch_size=8, max_batch_tokens=256, progress=None).embeddings
    np.testing.assert_allclose(budgeted, one_by_one, atol=1e-5)
    lengths = token_lengths(loaded, texts)
    assert max(lengths) == loaded.module.max_seq_length and lengths[6] == 2  # [CLS] [SEP] for the empty text
