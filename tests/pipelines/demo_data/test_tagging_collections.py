"""demo_data tagging collections: deterministic shards, tags and targets whose truth matches what is drawn."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from multimodal_suite.common.params import from_params
from multimodal_suite.common.webdataset_shards import SampleProblem
from multimodal_suite.datasets.sample_files_dataset import SampleFilesDataset
from multimodal_suite.datasets.webdataset_shards_dataset import WebDatasetShardsDataset
from multimodal_suite.pipelines.demo_data import create_pipeline
from multimodal_suite.pipelines.demo_data.nodes import generate_tagging_samples
from multimodal_suite.pipelines.demo_data.params import CELL_MARGIN, DemoTaggingConfig
from multimodal_suite.pipelines.demo_data.tagging_collections import (
    COLORS,
    PHOTOS,
    SHAPES,
    bad_input_keys,
    plan_source_image,
    plan_target_image,
    shape_mask,
    vocabulary_weights,
)

PARAMS = {"seed": 7}
CONFIG = from_params(DemoTaggingConfig, PARAMS, "demo_data_tagging")
BAD = bad_input_keys(CONFIG)

Outputs = tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes], dict[str, dict[str, list[str]]]]


@pytest.fixture(scope="module")
def generated() -> Outputs:
    return generate_tagging_samples(PARAMS)


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {info.name: tar.extractfile(info).read() for info in tar if info.isreg()}


def test_deterministic(generated: Outputs) -> None:
    assert generate_tagging_samples(PARAMS) == generated  # same keys, same bytes
    other = generate_tagging_samples({"seed": 8})
    assert other[0] != generated[0] and other[3] != generated[3]


def test_layout(generated: Outputs) -> None:
    source, tags, target, truth = generated
    shards = [f"shard-{index:06d}" for index in range(CONFIG.num_shards)]
    assert sorted(source) == sorted([f"{name}.parquet" for name in shards] + [f"{name}.tar" for name in shards])
    members = tar_members(source["shard-000000.tar"])
    keys = [f"0000{index:05d}" for index in range(CONFIG.samples_per_shard)]
    assert sorted(members) == sorted([f"{key}.jpg" for key in keys] + [f"{key}.json" for key in keys])
    assert json.loads(members["000000003.json"]) == {"key": "000000003", "width": 160, "height": 160}
    assert decode(members["000000003.jpg"]).shape == (160, 160, 3)
    rows = pq.read_table(io.BytesIO(source["shard-000000.parquet"])).to_pylist()
    assert [row["key"] for row in rows] == keys
    assert {"status", "width", "height", "sha256"} <= set(rows[0]) and rows[0]["status"] == "success"

    assert len(tags) == CONFIG.num_shards * CONFIG.samples_per_shard - 1  # one sample has no tag file
    assert sorted(target) == sorted(f"{folder}/{name}" for folder, names in truth.items() for name in names)
    assert list(truth) == ["00290", "00291"]
    assert all(len(names) == CONFIG.images_per_folder for names in truth.values())
    assert all(decode(data).shape == (160, 160, 3) for data in target.values())


def test_bad_inputs_are_where_bad_input_keys_says(generated: Outputs) -> None:
    source, tags, target, truth = generated
    assert f"{BAD['missing_tags']}.json" not in tags
    shard_of = {key: f"shard-{int(key[:5]):06d}.tar" for key in (BAD["truncated_jpeg"], BAD["not_an_image"])}
    truncated = tar_members(source[shard_of[BAD["truncated_jpeg"]]])[f"{BAD['truncated_jpeg']}.jpg"]
    with pytest.raises(OSError):
        decode(truncated)
    assert tar_members(source[shard_of[BAD["not_an_image"]]])[f"{BAD['not_an_image']}.jpg"].startswith(b"<!DOCTYPE")

    cut = source[BAD["truncated_tar"]]
    read = []
    with pytest.raises(tarfile.ReadError):
        with tarfile.open(fileobj=io.BytesIO(cut), mode="r|") as tar:
            for info in tar:
                tar.extractfile(info).read()
                read.append(info.name)
    lost_at = int(BAD["truncated_at"][-4:])
    assert read[-1] == f"{int(BAD['truncated_at']) - 1:09d}.json"  # every member before the cut reads fine
    assert len(read) == 2 * lost_at < 2 * CONFIG.samples_per_shard

    folder, name = BAD["blank_target"].split("/")
    assert truth[folder][name] == []
    blank = decode(target[BAD["blank_target"]])
    assert blank.std(axis=(0, 1)).max() < 6  # background only: no object anywhere
    assert sum(not image_tags for names in truth.values() for image_tags in names.values()) == 1
    assert bad_input_keys(DemoTaggingConfig(bad_inputs=False)) == {}


def test_tags_are_the_union_of_the_drawn_objects(generated: Outputs) -> None:
    source, tags, target, truth = generated
    for index in range(CONFIG.samples_per_shard):
        plan = plan_source_image(CONFIG, 0, index)
        key = f"0000{index:05d}"
        assert plan.tags == sorted({tag for placed in plan.objects for tag in placed.obj.tags})
        assert CONFIG.min_objects <= len(plan.objects) <= CONFIG.max_objects
        if key != BAD["missing_tags"]:
            assert json.loads(tags[f"{key}.json"]) == {"tags": plan.tags}

    checked = 0
    for folder, names in truth.items():
        for index, name in enumerate(names):
            plan = plan_target_image(CONFIG, folder, index)
            assert truth[folder][name] == plan.tags
            pixels = decode(target[f"{folder}/{name}"])
            boxes = [placed.box for placed in plan.objects]
            for i, a in enumerate(boxes):  # objects never touch: a segmenter sees background between them
                for b in boxes[i + 1:]:
                    gap = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
                    assert gap >= 2 * CELL_MARGIN
            for placed in plan.objects:
                x0, y0, x1, y1 = placed.box
                region = pixels[y0:y1, x0:x1]
                if placed.obj.kind == "shape":  # the drawn colour is the tagged one, textured or not
                    inside = np.asarray(shape_mask(placed.obj.name, x1 - x0)) > 0
                    mean = region[inside].mean(axis=0)
                    direction = mean / np.linalg.norm(mean)
                    nearest = max(COLORS, key=lambda c: float(np.dot(direction, np.asarray(COLORS[c]))
                                                              / np.linalg.norm(COLORS[c])))
                    assert nearest == placed.obj.color, (folder, name, placed.obj)
                    checked += 1
                else:  # photos and figures are visibly there, not background
                    assert region.std() > 10
    assert checked > 20


def test_target_images_are_held_out_from_the_source(generated: Outputs) -> None:
    source, tags, _, truth = generated
    source_tag_sets = {tuple(json.loads(data)["tags"]) for data in tags.values()}
    target_tag_sets = [tuple(image_tags) for names in truth.values() for image_tags in names.values() if image_tags]
    assert sum(tag_set in source_tag_sets for tag_set in target_tag_sets) < len(target_tag_sets) // 2
    vocabulary = {tag for tag_set in source_tag_sets for tag in tag_set}
    assert {tag for tag_set in target_tag_sets for tag in tag_set} <= vocabulary  # same vocabulary
    assert {"cat", "animal", "striped", "circle", "red"} <= vocabulary


def _object_counts(config: DemoTaggingConfig) -> Counter:
    return Counter(placed.obj.name for shard in range(config.num_shards) for index in range(config.samples_per_shard)
                   for placed in plan_source_image(config, shard, index).objects)


def test_fine_grained_tags_are_of_uneven_frequency_and_coarse_tags_cover_every_image() -> None:
    assert vocabulary_weights(3, 1.0) == [1.0, 0.5, 1 / 3] and vocabulary_weights(3, 0.0) == [1.0, 1.0, 1.0]
    skewed = _object_counts(CONFIG)
    assert skewed[SHAPES[0]] > 3 * skewed[SHAPES[-1]] > 0  # common and rare shapes, every one drawn
    assert skewed[PHOTOS[0].name] > 3 * skewed[PHOTOS[-1].name] > 0
    even = _object_counts(DemoTaggingConfig(seed=7, tag_skew=0.0))
    assert max(even[shape] for shape in SHAPES) < 2 * min(even[shape] for shape in SHAPES)
    for index in range(CONFIG.samples_per_shard):
        plan = plan_source_image(CONFIG, 1, index)
        kinds = {placed.obj.kind for placed in plan.objects}
        assert ("photo" in plan.tags) == ("photo" in kinds)
        assert ("drawing" in plan.tags) == bool(kinds & {"shape", "figure"})
    with pytest.raises(ValueError, match="tag_skew"):
        DemoTaggingConfig(tag_skew=-1.0)


def test_pipeline_node_writes_through_the_catalog(tmp_path: Path) -> None:
    params = {"seed": 3, "num_shards": 2, "samples_per_shard": 16, "images_per_folder": 4}
    catalog = DataCatalog({
        "tagging_source_shards@files": SampleFilesDataset(filepath=str(tmp_path / "source")),
        "tagging_vlm_tag_files": SampleFilesDataset(filepath=str(tmp_path / "vlm_tags")),
        "tagging_target_images@files": SampleFilesDataset(filepath=str(tmp_path / "target")),
        "tagging_target_truth": MemoryDataset(),
        "params:demo_data_tagging": MemoryDataset(params),
    })
    SequentialRunner().run(create_pipeline().only_nodes("generate_tagging_samples"), catalog)
    assert sorted(path.name for path in (tmp_path / "target").iterdir() if path.is_dir()) == ["00290", "00291"]
    assert len(list((tmp_path / "target" / "00290").glob("*.jpg"))) == 4
    assert sum(len(names) for names in catalog.load("tagging_target_truth").values()) == 8

    # The tolerant reader sees every sample but the broken ones, and says why each one is missing.
    bad = bad_input_keys(from_params(DemoTaggingConfig, params, "demo_data_tagging"))
    view = WebDatasetShardsDataset(filepath=str(tmp_path / "source"), tags_dir=str(tmp_path / "vlm_tags")).load()
    problems: list[SampleProblem] = []
    samples = list(view.samples(on_problem=problems.append))
    lost_at = int(bad["truncated_at"][-4:])  # samples of the cut shard from this one on are gone
    assert len(samples) == 16 + lost_at - 2
    assert sorted(problem.key for problem in problems) == sorted(
        [bad["truncated_jpeg"], bad["not_an_image"], bad["truncated_at"]])
    by_key = {sample.key: sample for sample in samples}
    assert by_key[bad["missing_tags"]].tags is None
    assert all(sample.tags for key, sample in by_key.items() if key != bad["missing_tags"])
    assert all(sample.parquet_row["key"] == sample.key for sample in samples)
