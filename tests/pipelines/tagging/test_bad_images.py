"""Tagging with decompression-bomb images among the good ones: a source shard gives error rows for the bombs only
and crops for the rest, a target folder rejects the bombs and crops the rest, in process and in a Ray replica."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from multimodal_suite.common.webdataset_shards import WebDatasetShards
from multimodal_suite.datasets import EmbeddingShardDataset, SampleFilesDataset
from multimodal_suite.pipelines.demo_data.broken_inputs import (
    decompression_bomb_jpeg,
    decompression_bomb_png,
)
from multimodal_suite.pipelines.demo_data.nodes import generate_tagging_samples
from multimodal_suite.pipelines.tagging import nodes
from multimodal_suite.pipelines.tagging.crops import CropEmbedder
from multimodal_suite.pipelines.tagging.ray_shard_reader import NO_END
from multimodal_suite.pipelines.tagging.ray_source_crops import CropEmbedActor
from multimodal_suite.pipelines.tagging.source_crops import iter_source_tables

SAMPLES = {"seed": 5, "num_shards": 1, "samples_per_shard": 6, "images_per_folder": 3, "bad_inputs": False,
           "target_folders": ["00290"]}
IMAGE_SIDE = 160  # the generated images are 160 × 160
SHARD = "shard-000000.tar"
TINY_CLIP = {
    "source": "config", "family": "clip", "seed": 0,
    "config": {"projection_dim": 32,
               "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                                 "num_hidden_layers": 1, "num_attention_heads": 2},
               "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "vocab_size": 100, "bos_token_id": 0,
                               "eos_token_id": 2, "pad_token_id": 1}},
}
MODELS = {"segmenter": {"backend": "classical", "min_area": 150, "max_masks": 9}, "clip_model": TINY_CLIP}
BATCHING = {"batch_images": 4, "batch_clips": 16, "batch_faiss": 7}


def _replace_members(tar_bytes: bytes, replacements: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as source, tarfile.open(fileobj=out, mode="w") as tar:
        for info in source.getmembers():
            data = replacements.get(info.name, source.extractfile(info).read())
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """One source shard of six samples, sample 1 a bomb JPEG and sample 4 a bomb PNG (as ``.jpg``); one target
    folder of three good images."""
    root = tmp_path_factory.mktemp("tagging_bombs")
    source, tags, target, _ = generate_tagging_samples(SAMPLES)
    bombs = {"000000001": decompression_bomb_jpeg(), "000000004": decompression_bomb_png()}
    source[SHARD] = _replace_members(source[SHARD], {f"{key}.jpg": data for key, data in bombs.items()})
    SampleFilesDataset(filepath=str(root / "source")).save(source)
    SampleFilesDataset(filepath=str(root / "vlm_tags")).save(tags)
    return root, target, set(bombs)


def _view(root, verify_images: bool) -> WebDatasetShards:
    return WebDatasetShards(str(root / "source"), tags_url=str(root / "vlm_tags"), verify_images=verify_images)


@pytest.fixture(scope="module")
def embedder():
    return CropEmbedder(MODELS["segmenter"], TINY_CLIP, batch_clips=16, device="cpu", mixed_precision=False)


@pytest.mark.parametrize("verify_images", [True, False], ids=["reader_checks", "embedder_decodes"])
def test_source_bombs_are_error_rows_and_the_rest_are_crops(collection, embedder, verify_images):
    root, _, bombs = collection
    [(shard, table)] = list(iter_source_tables(_view(root, verify_images), [SHARD], embedder, batch_images=4))
    rows = table.rows
    errors = rows[rows["error"] != ""]
    assert shard == SHARD and set(errors["sample_key"]) == bombs and len(errors) == len(bombs)
    assert errors["error"].str.contains("image too large").all()
    crops = rows[rows["error"] == ""]
    assert set(crops["sample_key"]) == {f"{i:09d}" for i in range(6)} - bombs
    assert np.all(np.linalg.norm(table.embeddings[crops.index.to_numpy()], axis=1) > 0)


def test_the_source_pixel_limit_reaches_the_decode(collection, tmp_path):
    root, _, _ = collection
    source = {"engine": "in_process", "device": "cpu", "mixed_precision": False,
              "max_image_pixels": IMAGE_SIDE * IMAGE_SIDE - 1}
    cache = EmbeddingShardDataset(filepath=str(tmp_path / "crops")).load()
    [table] = list(nodes.embed_source_crops(_view(root, verify_images=False), cache, MODELS, BATCHING, source))
    assert len(table.rows) == 6 and table.rows["error"].str.contains("image too large").all()
    assert table.rows["error"].str.contains(f"{IMAGE_SIDE} × {IMAGE_SIDE}").sum() == 4  # the bombs claim more


def test_the_ray_replica_turns_a_bomb_into_an_error_row(collection):
    actor = CropEmbedActor(MODELS["segmenter"], TINY_CLIP, batch_clips=16, device="cpu", mixed_precision=False,
                           num_threads=None)
    root, target, _ = collection
    good = next(iter(target.values()))
    batch = {"shard": np.array([SHARD, SHARD], dtype=object), "seq": np.array([0, 1]),
             "end_total": np.array([NO_END, NO_END]), "problem": np.array(["", ""], dtype=object),
             "sample_key": np.array(["a", "b"], dtype=object), "image": np.array([good, decompression_bomb_jpeg()], dtype=object),
             "tags_json": np.array(["[]", "[]"], dtype=object)}
    out = actor(batch)
    records = [json.loads(record) for record in out["record"]]
    bad = [r for r in records if r["sample_key"] == "b"]
    assert len(bad) == 1 and bad[0]["error"].startswith("image too large")
    assert all(r["error"] == "" for r in records if r["sample_key"] == "a") and len(records) > 1


def _segment_target(images: dict[str, bytes], **target):
    loaders = {name: (lambda data=data: data) for name, data in images.items()}
    return nodes.segment_target_images(loaders, MODELS, BATCHING, {"folder": "00290", "device": "cpu", **target})


def test_target_bombs_are_rejects_and_the_rest_are_cropped(collection):
    _, target, _ = collection
    images = {name.split("/")[-1]: data for name, data in target.items()}
    good = set(images)
    images.update({"bomb.jpg": decompression_bomb_jpeg(), "bomb.png": decompression_bomb_png()})
    files, table, rejects = _segment_target(images)
    assert set(table["image"]) == good and sorted(files) == sorted(table["crop_file"])
    undecodable = rejects[rejects["reason"] == "image_undecodable"]
    assert set(undecodable["item"]) == {"image bomb.jpg of folder 00290", "image bomb.png of folder 00290"}
    assert undecodable["detail"].str.startswith("image too large").all()


def test_the_target_pixel_limit_reaches_the_decode(collection):
    _, target, _ = collection
    images = {name.split("/")[-1]: data for name, data in target.items()}
    _, table, rejects = _segment_target(images, max_image_pixels=IMAGE_SIDE * IMAGE_SIDE - 1)
    undecodable = rejects[rejects["reason"] == "image_undecodable"]
    assert table.empty and len(undecodable) == len(images)
    assert undecodable["detail"].str.contains(f"{IMAGE_SIDE} × {IMAGE_SIDE} = 25,600 pixels, over the limit").all()
