"""tagging nodes and pipelines on generated collections: tar streaming with broken members, resume per shard,
index, target folder tagging, re-tagging without re-segmenting (the Ray Data engine: test_ray_source_crops.py)."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import ParquetDataset
from kedro_datasets.pillow import ImageDataset

from multimodal_suite.common.embeddings import EmbeddingTable
from multimodal_suite.common.params import ParamsError, from_params
from multimodal_suite.datasets import (
    EmbeddingShardDataset,
    FaissIndexDataset,
    ImageFolderDataset,
    SafetensorsModelDataset,
    SampleFilesDataset,
    WebDatasetShardsDataset,
)
from multimodal_suite.pipelines.demo_data.nodes import generate_tagging_samples
from multimodal_suite.pipelines.demo_data.params import DemoTaggingConfig
from multimodal_suite.pipelines.demo_data.tagging_collections import bad_input_keys
from multimodal_suite.pipelines.tagging import nodes
from multimodal_suite.pipelines.tagging.params import TargetParams
from multimodal_suite.pipelines.tagging.pipeline import (
    create_evaluate_pipeline,
    create_index_pipeline,
    create_retag_pipeline,
    create_source_pipeline,
    create_target_pipeline,
)

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
PARAMS = {
    "models": {"segmenter": {"backend": "classical", "min_area": 150, "max_masks": 9}, "clip_model": TINY_CLIP},
    "batching": {"batch_images": 8, "batch_clips": 16, "batch_faiss": 7},
    "source": {"start_shard": 0, "end_shard": None, "engine": "in_process", "device": "cpu",
               "ray": {"num_replicas": 2, "num_cpus_per_replica": 1}},
    "index": {"factory": "auto", "target_recall": 0.95, "k": 10, "held_out_queries": 50, "seed": 0},
    "target": {"folder": "00290", "k": 10, "min_votes": 3, "device": "cpu",
               "contact_sheet": {"max_crops": 12, "thumb_size": 48}},
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Source shards (a truncated JPEG, an HTML page as image, a sample without tags, a tar cut mid-member),
    VLM tags, two target folders and their true tags, on disk."""
    root = tmp_path_factory.mktemp("tagging")
    source, tags, target, truth = generate_tagging_samples(SAMPLES)
    SampleFilesDataset(filepath=str(root / "source")).save(source)
    SampleFilesDataset(filepath=str(root / "vlm_tags")).save(tags)
    SampleFilesDataset(filepath=str(root / "target")).save(target)
    return root, truth, bad_input_keys(from_params(DemoTaggingConfig, SAMPLES, "demo_data_tagging"))


def params(**changes) -> dict:
    result = copy.deepcopy(PARAMS)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        result[section][key] = value
    return result


def source_view(root: Path):
    return WebDatasetShardsDataset(filepath=str(root / "source"), tags_dir=str(root / "vlm_tags")).load()


def embed_source(view, cache, run_params: dict):
    return nodes.embed_source_crops(view, cache, run_params["models"], run_params["batching"], run_params["source"])


def run_source(root: Path, shards_dir: Path, run_params: dict) -> EmbeddingShardDataset:
    dataset = EmbeddingShardDataset(filepath=str(shards_dir))
    for table in embed_source(source_view(root), dataset.load(), run_params):
        dataset.save(table)
    return dataset


def test_source_keeps_every_sample_and_names_every_bad_one(collection, tmp_path):
    root, _, bad = collection
    stored = run_source(root, tmp_path / "shards", params()).load()
    rows = stored.rows
    errors = rows[rows["error"] != ""]
    # the broken samples are error rows with a reason; the samples lost with the cut tar's end are listed too
    assert {bad["truncated_jpeg"], bad["not_an_image"], bad["truncated_at"]} <= set(errors["sample_key"])
    lost = errors[errors["error"].str.contains("not in the tar")]
    assert len(lost) > 0 and all(key.startswith(bad["truncated_at"][:-4]) for key in lost["sample_key"])
    # every sample of the collection is accounted for, once as crops or once as an error
    assert rows["sample_key"].nunique() == SAMPLES["num_shards"] * SAMPLES["samples_per_shard"]
    assert not set(errors["sample_key"]) & set(rows.loc[rows["error"] == "", "sample_key"])
    crops = rows[rows["error"] == ""]
    assert (crops.groupby("sample_key")["crop_id"].min() == 0).all()
    untagged = crops[crops["sample_key"] == bad["missing_tags"]]
    assert len(untagged) and not untagged["has_tags"].any() and all(len(t) == 0 for t in untagged["vlm_tags"])
    assert all(len(t) > 0 for t in crops.loc[crops["has_tags"], "vlm_tags"])
    vectors = stored.get(errors["key"].tolist())
    assert np.all(vectors == 0) and np.all(np.linalg.norm(stored.get(crops["key"].tolist()), axis=1) > 0)

    rejects = nodes.report_source_rejects(stored)
    assert set(rejects["reason"]) == {"sample_unusable", "tags_missing"}
    assert (rejects["reason"] == "sample_unusable").sum() == len(errors)
    id_to_tags = nodes.map_ids_to_tags(stored)
    assert len(id_to_tags) == len(crops)
    assert id_to_tags[str(int(crops.index[0]))] == list(crops.iloc[0]["vlm_tags"])


def test_source_resumes_per_shard(collection, tmp_path, caplog):
    root, _, _ = collection
    shards_dir = tmp_path / "shards"
    first = run_source(root, shards_dir, params(source__end_shard=1)).load()
    assert set(first.rows["shard"]) == {"shard-000000.tar"} and len(first.part_names) == 1
    second = run_source(root, shards_dir, params()).load()
    assert second.part_names[0] == first.part_names[0] and len(second.part_names) == 2
    assert set(second.rows["shard"]) == {"shard-000000.tar", "shard-000001.tar"}
    again = list(embed_source(source_view(root), second, params()))
    assert [len(table) for table in again] == [0]
    # another segmenter configuration is another cache: nothing is reused across configurations
    other = params()
    other["models"]["segmenter"]["min_area"] = 300
    assert sum(len(t) for t in embed_source(source_view(root), second, other)) > 0


def test_unknown_engine_is_a_clear_error(collection, tmp_path):
    root, _, _ = collection
    with pytest.raises(ValueError, match="in_process.*ray_data"):
        run_source(root, tmp_path / "shards", params(source__engine="spark"))


def _catalog(root: Path, work: Path, truth: dict, folder: str = "00290") -> DataCatalog:
    out = work / "target" / folder
    return DataCatalog({
        "tagging_source_shards@webdataset": WebDatasetShardsDataset(filepath=str(root / "source"),
                                                         tags_dir=str(root / "vlm_tags")),
        "source_crop_embeddings": EmbeddingShardDataset(filepath=str(work / "source_crops")),
        "source_crop_embeddings_cache": EmbeddingShardDataset(filepath=str(work / "source_crops")),
        "tagging_id_to_tags": JSONDataset(filepath=str(work / "id_to_tags.json")),
        "tagging_rejects": MemoryDataset(),
        "tag_index": FaissIndexDataset(filepath=str(work / "index")),
        "tagging_target_images@folder": ImageFolderDataset(filepath=str(root / "target" / folder)),
        "tagging_target_crops": SampleFilesDataset(filepath=str(out / "segmentation" / "crops")),
        "target_crop_table": ParquetDataset(filepath=str(out / "segmentation" / "metadata.parquet")),
        "tagging_target_rejects": ParquetDataset(filepath=str(out / "rejects.parquet")),
        "target_crop_embeddings": EmbeddingShardDataset(filepath=str(out / "embeddings")),
        "target_crop_embeddings_cache": EmbeddingShardDataset(filepath=str(out / "embeddings")),
        "target_tag_table": ParquetDataset(filepath=str(out / "tags.parquet")),
        "target_tags": JSONDataset(filepath=str(out / "tags.json")),
        "target_contact_sheet": ImageDataset(filepath=str(work / "contact_sheet.png")),
        "tagging_target_truth": MemoryDataset(truth),
        "tagging_evaluation": JSONDataset(filepath=str(work / "evaluation.json")),
        "tag_probe": SafetensorsModelDataset(filepath=str(work / "tag_probe"), producer_pipeline="tagging_index"),
        "tagging_vote_thresholds": JSONDataset(filepath=str(work / "index" / "vote_thresholds.json")),
        "target_tag_scores": ParquetDataset(filepath=str(out / "tag_scores.parquet")),
        "tagging_per_tag_metrics": MemoryDataset(),
        "tagging_per_tag_f1": MemoryDataset(),
        "tagging_metrics": MemoryDataset(),
    })


def _run(pipeline, catalog: DataCatalog, run_params: dict) -> None:
    for section, values in run_params.items():
        catalog[f"params:tagging.{section}"] = MemoryDataset(values, copy_mode="deepcopy")
    SequentialRunner().run(pipeline, catalog)


def test_pipelines_end_to_end_then_retag_without_resegmenting(collection, tmp_path):
    root, truth, bad = collection
    catalog = _catalog(root, tmp_path, truth)
    _run(create_source_pipeline() + create_index_pipeline() + create_target_pipeline() + create_evaluate_pipeline(),
         catalog, params())
    index = catalog.load("tag_index")
    assert index.info["factory"] == "Flat" and index.info["recall_at_k"] >= 0.95
    assert set(index.ids.tolist()) == {int(i) for i in catalog.load("tagging_id_to_tags")}

    table = catalog.load("target_crop_table")
    images = sorted(os.listdir(root / "target" / "00290"))
    assert sorted(table["image"].unique()) == images  # every image has crops, the blank one included
    blank = table[table["image"] == bad["blank_target"].split("/")[-1]]
    assert len(blank) == 1 and bool(blank["whole_image"].iloc[0])
    assert "no_objects_found" in set(catalog.load("tagging_target_rejects")["reason"])
    crops_dir = tmp_path / "target" / "00290" / "segmentation" / "crops"
    assert sorted(p.name for p in crops_dir.glob("*.png")) == sorted(table["crop_file"])

    tags = catalog.load("target_tags")
    assert sorted(tags) == images
    tag_table = catalog.load("target_tag_table")
    assert set(tag_table["image"]) <= set(images) and tag_table["score"].between(0, 1).all()
    evaluation = catalog.load("tagging_evaluation")
    assert evaluation["images"] == len(images) and 0 <= evaluation["precision"] <= 1
    assert evaluation["recall"] > 0  # tags do come from the neighbours' source samples
    sheet = catalog.load("target_contact_sheet")
    assert sheet.width > 48 and sheet.height > 48

    # tagging_index: a probe and thresholds over the vocabulary of the tagged source samples
    vocabulary = sorted({tag for source_tags in catalog.load("tagging_id_to_tags").values() for tag in source_tags})
    thresholds = catalog.load("tagging_vote_thresholds")
    assert catalog.load("tag_probe")["config"]["tags"] == thresholds["tags"] == vocabulary
    assert set(thresholds["thresholds"]) == {"knn", "probe", "both"} and thresholds["k"] == 10
    assert set(thresholds["positives"]) == set(vocabulary) and 0 < thresholds["images"] <= 2 * 16

    # every method is scored and evaluated; the default one (both) is what the folder is tagged with
    scores = catalog.load("target_tag_scores")
    assert list(scores.columns) == nodes.SCORE_COLUMNS and scores[["knn", "probe", "both"]].stack().between(0, 1).all()
    assert {(image, tag) for image, kept in tags.items() for tag in kept} == set(
        map(tuple, scores.loc[scores["both"] >= 0.5, ["image", "tag"]].to_numpy()))
    assert evaluation["method"] == "both" and evaluation["f1"] == evaluation["methods"]["both"]["f1"]
    assert set(evaluation["methods"]) == {"knn_min_votes", "knn", "probe", "both"}
    per_tag = catalog.load("tagging_per_tag_metrics")
    true_tags = {tag for image_tags in truth["00290"].values() for tag in image_tags}
    for method in evaluation["methods"]:
        rows = per_tag[per_tag["method"] == method]
        assert true_tags <= set(rows["tag"]) and rows["f1"].between(0, 1).all()
        assert rows["support"].sum() == sum(len(image_tags) for image_tags in truth["00290"].values())
    metrics = catalog.load("tagging_metrics")
    assert metrics["both.f1"]["value"] == evaluation["f1"]
    assert {f"knn.per_tag.{tag}.f1" for tag in true_tags} <= set(metrics)
    assert len(catalog.load("tagging_per_tag_f1").axes) == 1

    # re-tag with another method: the saved crops and embeddings are reused, nothing is re-segmented
    mtimes = {p.name: p.stat().st_mtime_ns for p in crops_dir.glob("*.png")}
    parts = EmbeddingShardDataset(filepath=str(tmp_path / "target/00290/embeddings")).load().part_names
    for method in ("knn", "probe"):
        _run(create_retag_pipeline(), catalog, params(target__method=method))
        retagged = catalog.load("target_tags")
        assert {(image, tag) for image, kept in retagged.items() for tag in kept} == set(
            map(tuple, scores.loc[scores[method] >= 0.5, ["image", "tag"]].to_numpy()))
    assert {p.name: p.stat().st_mtime_ns for p in crops_dir.glob("*.png")} == mtimes
    assert EmbeddingShardDataset(filepath=str(tmp_path / "target/00290/embeddings")).load().part_names == parts

    # the whole target pipeline again: embeddings are all reused
    _run(create_target_pipeline(), catalog, params())
    assert EmbeddingShardDataset(filepath=str(tmp_path / "target/00290/embeddings")).load().part_names == parts


def test_missing_target_folder_is_a_clear_error(collection, tmp_path):
    root, truth, _ = collection
    with pytest.raises(DatasetError, match=r"does not exist.*00290, 00291.*tagging\.target\.folder"):
        ImageFolderDataset(filepath=str(root / "target" / "99999")).load()


def test_dimension_mismatch_between_index_and_target_is_a_clear_error(collection, tmp_path):
    import faiss

    from multimodal_suite.common.faiss_index import IndexBundle

    index = faiss.IndexFlatIP(8)
    index.add(np.eye(8, dtype=np.float32))
    table = pd.DataFrame({"image": ["a.jpg"], "crop_id": [0], "crop_file": ["a_000.png"], "key": ["k"]})
    stored = EmbeddingShardDataset(filepath=str(tmp_path / "e"))
    stored.save(EmbeddingTable(np.ones((1, 4), np.float32), table[["key"]]))
    with pytest.raises(ValueError, match="4-d.*8-d.*clip_model"):
        nodes.tag_target_images(IndexBundle(index), {}, {}, {}, stored.load(), table, {}, PARAMS["batching"],
                                TargetParams(folder="00290", device="cpu"))


def test_a_misspelled_parameter_is_an_error_naming_the_valid_keys(collection, tmp_path):
    root, _, _ = collection
    misspelled = params()
    misspelled["target"]["min_vote"] = 5
    with pytest.raises(ParamsError, match=r"'min_vote' \(did you mean 'min_votes'\?\).*valid keys: .*min_votes"):
        nodes.evaluate_target_tags({}, {"00290": {}}, misspelled["target"])
    with pytest.raises(ParamsError, match=r"tagging\.batching.*'batch_clips' must be an integer"):
        list(embed_source(source_view(root), EmbeddingShardDataset(filepath=str(tmp_path / "s")).load(),
                          params(batching__batch_clips="16")))



def _tar(members: list[tuple[str, bytes]]) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _jpeg(color: str) -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (48, 48), "white")
    ImageDraw.Draw(image).rectangle((8, 8, 36, 36), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def crafted_source(tmp_path_factory):
    """One shard of crafted samples (good, bad tag file, bad metadata, no tag file, a member named to reach a tag
    file outside the tags folder) and one shard of random bytes."""
    import json

    root = tmp_path_factory.mktemp("crafted")
    shards, tags = root / "collection" / "shards", root / "collection" / "tags"
    shards.mkdir(parents=True)
    tags.mkdir()
    members = [("good.jpg", _jpeg("red")), ("good.json", b"{}"), ("badtags.jpg", _jpeg("blue")),
               ("badmeta.jpg", _jpeg("green")), ("badmeta.json", b"{broken"), ("untagged.jpg", _jpeg("red")),
               ("../../evil.jpg", _jpeg("red"))]
    (shards / "shard-000000.tar").write_bytes(_tar(members))
    (shards / "shard-000001.tar").write_bytes(bytes(range(256)) * 16)
    for key in ("good", "badmeta"):
        (tags / f"{key}.json").write_text(json.dumps({"tags": ["red", "square"]}))
    (tags / "badtags.json").write_text("{not json")
    (root / "evil.json").write_text(json.dumps({"tags": ["stolen"]}))  # what ../../evil would name
    view = WebDatasetShardsDataset(filepath=str(shards), tags_dir=str(tags)).load()
    stored = EmbeddingShardDataset(filepath=str(root / "embeddings"))
    for table in embed_source(view, stored.load(), params()):
        stored.save(table)
    return view, stored.load()


def test_each_crafted_sample_has_one_status_and_an_unreadable_shard_is_named(crafted_source):
    _, stored = crafted_source
    rejects = nodes.report_source_rejects(stored)
    by_item = {item: reasons["reason"].tolist() for item, reasons in rejects.groupby("item")}
    assert by_item == {
        "sample badtags of shard-000000.tar": ["tags_unreadable"],
        "sample badmeta of shard-000000.tar": ["metadata_unreadable"],
        "sample untagged of shard-000000.tar": ["tags_missing"],
        "sample ../../evil of shard-000000.tar": ["sample_unusable"],
        "shard shard-000001.tar": ["shard_unreadable"],
    }
    detail = rejects.set_index("item")["detail"]
    assert "'../../evil.jpg'" in detail["sample ../../evil of shard-000000.tar"]
    assert "not a tar archive" in detail["shard shard-000001.tar"]
    assert "not valid JSON" in detail["sample badtags of shard-000000.tar"]
    crops = stored.rows[stored.rows["error"] == ""]
    assert set(crops["sample_key"]) == {"good", "badtags", "badmeta", "untagged"}  # every readable image embedded
    assert all(len(tags) == 0 for tags in crops.loc[crops["sample_key"] == "badtags", "vlm_tags"])
    assert "stolen" not in {tag for tags in nodes.map_ids_to_tags(stored).values() for tag in tags}


def test_no_source_shard_selected_is_an_error_naming_the_folder(crafted_source, tmp_path):
    view, _ = crafted_source
    empty = EmbeddingShardDataset(filepath=str(tmp_path / "e")).load()
    with pytest.raises(ValueError, match=rf"no source shards selected: {view.url} holds 2 shards .*start_shard=2"):
        list(embed_source(view, empty, params(source__start_shard=2)))


def test_a_target_folder_without_images_is_an_error_naming_the_folder(tmp_path):
    (tmp_path / "00100").mkdir()
    (tmp_path / "00100" / "notes.txt").write_text("not an image")
    images = ImageFolderDataset(filepath=str(tmp_path / "00100")).load()
    run = params(target__folder="00100")
    with pytest.raises(ValueError, match=r"target folder '00100' holds no images .*tagging\.target\.folder='<name>'"):
        nodes.segment_target_images(images, run["models"], run["batching"], run["target"])
