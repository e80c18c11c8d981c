"""The Ray Data image path gives what the in-process path gives: same vectors, same failures, same order."""
from __future__ import annotations

import io

import numpy as np
import pytest
import ray
from PIL import Image, ImageDraw

from multimodal_suite.common.encoding import encode_images
from multimodal_suite.common.models import load_model
from multimodal_suite.common.ray import RayOptions
from multimodal_suite.common.ray_encoding import encode_images_ray
from multimodal_suite.datasets import ComicBookFolderDataset, EmbeddingShardDataset
from multimodal_suite.pipelines.pss import nodes

pytestmark = pytest.mark.slow  # starts a local Ray


@pytest.fixture(scope="module", autouse=True)
def ray_local():
    """One small local Ray for the module (its start-up is most of the cost)."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20)
    yield
    ray.shutdown()


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (40, 60), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = (int(v) for v in rng.integers(0, 30, 2))
        draw.rectangle((x, y, x + 12, y + 20), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def spec(precompute_params):
    """The tiny seeded SigLIP of the shared fixtures."""
    return precompute_params["image_model"]


@pytest.fixture(scope="module")
def loaders():
    """Seven pictures with a zero-byte file at 2 and a truncated JPEG at 5."""
    images = [_jpeg(seed) for seed in range(7)]
    images[2] = b""
    images[5] = images[5][: len(images[5]) // 3]
    return [lambda data=data: data for data in images]


def test_ray_data_matches_in_process(spec, loaders, monkeypatch):
    blocks = []
    from_items = ray.data.from_items

    def counting_from_items(rows, **kwargs):
        blocks.append(kwargs["override_num_blocks"])
        return from_items(rows, **kwargs)

    monkeypatch.setattr(ray.data, "from_items", counting_from_items)
    expected = encode_images(load_model(spec), loaders, batch_size=2, device="cpu",
                             mixed_precision=False, progress=None)
    got = encode_images_ray(spec, loaders, options=RayOptions(num_replicas=2, batch_size=2), batch_size=64,
                            device="cpu", mixed_precision=False)
    assert blocks == [4]  # one block per batch of options.batch_size, not of the section's batch_size
    assert got.embeddings.dtype == np.float32 and got.embeddings.shape == expected.embeddings.shape
    np.testing.assert_allclose(got.embeddings, expected.embeddings, rtol=1e-5, atol=1e-6)
    assert got.failures == expected.failures
    assert set(got.failures) == {2, 5} and "empty" in got.failures[2]
    assert not got.embeddings[[2, 5]].any()


def test_empty_input_starts_nothing(spec):
    assert encode_images_ray(spec, [], batch_size=4).embeddings.shape == (0, 0)


def test_existing_connection_is_left_open(spec, loaders):
    encode_images_ray(spec, loaders[:2], options=RayOptions(address="unreachable:1"), device="cpu")
    assert ray.is_initialized()


def test_embed_page_images_ray_engine_gives_the_same_shard_parts(tiny_collection, precompute_params, tmp_path):
    root, annotations = tiny_collection
    books = ComicBookFolderDataset(filepath=str(root)).load()
    index, _ = nodes.index_pages(books, annotations, precompute_params)
    params = dict(precompute_params, mixed_precision=False)
    empty_cache = EmbeddingShardDataset(filepath=str(tmp_path / "none")).load()
    expected = list(nodes.embed_page_images(books, index, empty_cache, params))
    got = list(nodes.embed_page_images(books, index, empty_cache,
                                       dict(params, engine="ray_data", ray={"num_replicas": 1})))
    assert len(got) == len(expected) > 1  # several parts, streamed in order
    for got_part, expected_part in zip(got, expected):
        assert got_part.model_spec_hash == expected_part.model_spec_hash
        assert got_part.rows.equals(expected_part.rows)
        np.testing.assert_allclose(got_part.embeddings, expected_part.embeddings, rtol=1e-5, atol=1e-6)
    assert any((part.rows["decode_error"] != "").any() for part in got)


def test_unknown_engine_is_a_clear_error(tiny_collection, precompute_params, tmp_path):
    root, annotations = tiny_collection
    books = ComicBookFolderDataset(filepath=str(root)).load()
    index, _ = nodes.index_pages(books, annotations, precompute_params)
    cache = EmbeddingShardDataset(filepath=str(tmp_path / "none")).load()
    with pytest.raises(ValueError, match="'in_process' or 'ray_data'"):
        next(nodes.embed_page_images(books, index, cache, dict(precompute_params, engine="spark")))
