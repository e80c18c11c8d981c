"""Source crops on Ray Data: the same tables as in process, on a local Ray started and stopped for the call."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray

from multimodal_suite.common.ray import RayOptions
from multimodal_suite.datasets import SampleFilesDataset, WebDatasetShardsDataset
from multimodal_suite.pipelines.demo_data.nodes import generate_tagging_samples
from multimodal_suite.pipelines.tagging.crops import CropEmbedder
from multimodal_suite.pipelines.tagging.ray_source_crops import iter_source_tables_ray
from multimodal_suite.pipelines.tagging.source_crops import iter_source_tables

pytestmark = pytest.mark.slow  # starts a local Ray

SAMPLES = {"seed": 5, "num_shards": 2, "samples_per_shard": 16, "images_per_folder": 5}
TINY_CLIP = {
    "source": "config", "family": "clip", "seed": 0,
    "config": {"projection_dim": 32,
               "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                                 "num_hidden_layers": 1, "num_attention_heads": 2},
               "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "vocab_size": 100, "bos_token_id": 0,
                               "eos_token_id": 2, "pad_token_id": 1}},
}
SEGMENTER = {"backend": "classical", "min_area": 150, "max_masks": 9}


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    """Two source shards with VLM tags (a truncated JPEG, an HTML page as image, a sample without tags, a tar cut
    mid-member), read back as the tagging pipeline reads them."""
    root = tmp_path_factory.mktemp("tagging")
    source, tags, _, _ = generate_tagging_samples(SAMPLES)
    SampleFilesDataset(filepath=str(root / "source")).save(source)
    SampleFilesDataset(filepath=str(root / "vlm_tags")).save(tags)
    return WebDatasetShardsDataset(filepath=str(root / "source"), tags_dir=str(root / "vlm_tags")).load()


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()


@pytest.mark.usefixtures("no_ray")
def test_ray_data_engine_gives_the_same_tables(view):
    local = dict(iter_source_tables(view, view.shards, CropEmbedder(SEGMENTER, TINY_CLIP, batch_clips=16,
                                                                     device="cpu"), 8))
    options = RayOptions(num_replicas=2, batch_size=8, num_cpus=2, object_store_gb=200 / 1024)
    remote = dict(iter_source_tables_ray(view, view.shards, SEGMENTER, TINY_CLIP, options=options, batch_clips=16,
                                         device="cpu"))
    assert not ray.is_initialized()  # the local Ray it started is shut down
    assert sorted(remote) == sorted(local) == view.shards
    for shard in view.shards:
        pd.testing.assert_frame_equal(remote[shard].rows, local[shard].rows)
        np.testing.assert_allclose(remote[shard].embeddings, local[shard].embeddings, rtol=1e-3, atol=1e-3)


@pytest.mark.usefixtures("no_ray")
def test_gpu_replicas_on_a_local_ray_without_gpus_are_refused(view):
    options = RayOptions(num_gpus_per_replica=1, num_cpus=1, num_gpus=0, object_store_gb=0.1)
    tables = iter_source_tables_ray(view, view.shards, SEGMENTER, TINY_CLIP, options=options, device="cpu")
    with pytest.raises(RuntimeError, match=r"num_gpus_per_replica=1 but the local Ray has 0 GPUs"):
        next(tables)
    assert not ray.is_initialized()
