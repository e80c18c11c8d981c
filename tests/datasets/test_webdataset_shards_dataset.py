"""WebDatasetShardsDataset and the WebDatasetShards view: streaming, tolerance to broken shards, selection."""
from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kedro.io import DataCatalog, DatasetError
from PIL import Image

from multimodal_suite.common.webdataset_shards import (
    SampleProblem,
    WebDatasetShards,
    image_problem,
    split_member_name,
)
from multimodal_suite.datasets.webdataset_shards_dataset import WebDatasetShardsDataset

COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sample_members(keys: list[str], images: dict[str, bytes] | None = None) -> list[tuple[str, bytes]]:
    """``<key>.jpg`` + ``<key>.json`` per key; ``images`` replaces some keys' image bytes."""
    members = []
    for index, key in enumerate(keys):
        members.append((f"{key}.jpg", (images or {}).get(key, jpeg(COLORS[index % len(COLORS)]))))
        members.append((f"{key}.json", json.dumps({"key": key, "index": index}).encode()))
    return members


def member_offset(data: bytes, name: str) -> tuple[int, int, int]:
    """``(header offset, data offset, size)`` of member ``name``."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        info = tar.getmember(name)
    return info.offset, info.offset_data, info.size


def write_tags(tags_dir: Path, keys: list[str]) -> None:
    tags_dir.mkdir(parents=True, exist_ok=True)
    for index, key in enumerate(keys):
        (tags_dir / f"{key}.json").write_text(json.dumps({"tags": [COLORS[index % len(COLORS)], "square"]}))


@pytest.fixture
def collection(tmp_path: Path) -> tuple[Path, Path]:
    """Three shards of 5 samples, a parquet beside shards 0 and 1, tag files for every sample."""
    root, tags = tmp_path / "shards", tmp_path / "tags"
    root.mkdir()
    for shard in range(3):
        keys = [f"s{shard}k{index}" for index in range(5)]
        (root / f"shard-{shard:06d}.tar").write_bytes(tar_bytes(sample_members(keys)))
        if shard < 2:
            rows = [{"key": key, "width": 64, "height": 48, "status": "success"} for key in keys]
            pq.write_table(pa.Table.from_pylist(rows), root / f"shard-{shard:06d}.parquet")
        write_tags(tags, keys)
    (root / "notes.txt").write_text("not a shard")
    return root, tags


def read_all(view: WebDatasetShards, shard: str) -> tuple[list, list[SampleProblem]]:
    problems: list[SampleProblem] = []
    return list(view.iter_samples(shard, on_problem=problems.append)), problems


def test_streams_a_shard_with_metadata_tags_and_rows(collection: tuple[Path, Path]) -> None:
    root, tags = collection
    view = WebDatasetShardsDataset(filepath=str(root), tags_dir=str(tags)).load()
    assert view.shards == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    samples, problems = read_all(view, "shard-000001.tar")
    assert problems == []
    assert [sample.key for sample in samples] == [f"s1k{index}" for index in range(5)]
    first = samples[0]
    assert (first.shard, first.image_ext, first.meta) == ("shard-000001.tar", "jpg", {"key": "s1k0", "index": 0})
    assert first.tags == ["red", "square"]
    assert first.parquet_row == {"key": "s1k0", "width": 64, "height": 48, "status": "success"}
    assert Image.open(io.BytesIO(samples[2].image_bytes)).getpixel((5, 5))[2] > 200  # blue, the third colour
    no_parquet, _ = read_all(view, "shard-000002.tar")
    assert all(sample.parquet_row is None for sample in no_parquet) and len(no_parquet) == 5
    assert [sample.key for sample in view.samples()][::5] == ["s0k0", "s1k0", "s2k0"]


def test_corrupt_member_is_skipped_and_the_rest_of_the_tar_is_read(tmp_path: Path) -> None:
    keys = [f"k{index}" for index in range(6)]
    whole = jpeg("red")
    broken = {"k1": whole[: len(whole) // 3], "k3": b"<html>404 Not Found</html>", "k4": b""}
    (tmp_path / "shard-000000.tar").write_bytes(tar_bytes(sample_members(keys, broken)))
    samples, problems = read_all(WebDatasetShards(str(tmp_path)), "shard-000000.tar")
    assert [sample.key for sample in samples] == ["k0", "k2", "k5"]
    assert [(problem.shard, problem.key) for problem in problems] == [("shard-000000.tar", key) for key in
                                                                      ("k1", "k3", "k4")]
    assert "does not decode" in problems[0].reason and "truncated" in problems[0].reason.lower()
    assert "not a recognised image format" in problems[1].reason and "empty" in problems[2].reason
    # Without the check the bytes pass through untouched, for consumers that decode (and report) themselves.
    unchecked, problems = read_all(WebDatasetShards(str(tmp_path), verify_images=False), "shard-000000.tar")
    assert len(unchecked) == 6 and problems == []
    assert unchecked[3].image_bytes == broken["k3"]


def test_corrupt_tar_header_resynchronises_on_the_next_member(tmp_path: Path) -> None:
    keys = [f"k{index}" for index in range(5)]
    data = bytearray(tar_bytes(sample_members(keys)))
    header, _, _ = member_offset(bytes(data), "k2.jpg")
    data[header + 148 : header + 156] = b"garbage!"  # the header checksum field
    (tmp_path / "shard-000000.tar").write_bytes(bytes(data))
    samples, problems = read_all(WebDatasetShards(str(tmp_path)), "shard-000000.tar")
    assert [sample.key for sample in samples] == ["k0", "k1", "k3", "k4"]
    reasons = [(problem.key, problem.reason) for problem in problems]
    assert len(reasons) == 2
    assert reasons[0][0] == "" and "not a readable tar header" in reasons[0][1] and "k2.json" in reasons[0][1]
    assert reasons[1][0] == "k2" and "no image member" in reasons[1][1]


def test_truncated_tar_yields_its_readable_part(tmp_path: Path) -> None:
    keys = [f"k{index}" for index in range(6)]
    data = tar_bytes(sample_members(keys))
    _, data_offset, size = member_offset(data, "k4.jpg")
    (tmp_path / "shard-000000.tar").write_bytes(data[: data_offset + size // 2])  # cut inside k4's image
    header, _, _ = member_offset(data, "k2.jpg")
    (tmp_path / "shard-000001.tar").write_bytes(data[:header])  # cut exactly between two members
    (tmp_path / "shard-000002.tar").write_bytes(b"")
    view = WebDatasetShards(str(tmp_path))

    samples, problems = read_all(view, "shard-000000.tar")
    assert [sample.key for sample in samples] == ["k0", "k1", "k2", "k3"]
    assert len(problems) == 1 and problems[0].key == "k4" and "rest of the shard is lost" in problems[0].reason

    samples, problems = read_all(view, "shard-000001.tar")
    assert [sample.key for sample in samples] == ["k0"]  # k1 may be incomplete: it is reported, not yielded
    assert [problem.key for problem in problems] == ["k1"] and "without an end marker" in problems[0].reason

    samples, problems = read_all(view, "shard-000002.tar")
    assert samples == [] and len(problems) == 1 and problems[0].key == ""
    assert view.count_keys("shard-000000.tar") == 5  # headers still readable: k0 … k4


def test_missing_and_malformed_tag_files(collection: tuple[Path, Path]) -> None:
    root, tags = collection
    (tags / "s0k1.json").unlink()
    (tags / "s0k2.json").write_text("{not json")
    (tags / "s0k3.json").write_text(json.dumps(["dotted", "circle"]))  # a bare list is accepted
    samples, problems = read_all(WebDatasetShards(str(root), tags_url=str(tags)), "shard-000000.tar")
    assert [sample.tags for sample in samples][:4] == [["red", "square"], None, None, ["dotted", "circle"]]
    assert [(problem.key, "not valid JSON" in problem.reason) for problem in problems] == [("s0k2", True)]
    without_tags, _ = read_all(WebDatasetShards(str(root)), "shard-000000.tar")
    assert all(sample.tags is None for sample in without_tags)


def test_malformed_metadata_is_reported_and_the_sample_kept(tmp_path: Path) -> None:
    members = sample_members(["k0", "k1"])
    members[1] = ("k0.json", b"[1, 2]")
    (tmp_path / "shard-000000.tar").write_bytes(tar_bytes(members + [("k2.json", b"{}")]))
    (tmp_path / "shard-000000.parquet").write_bytes(b"PAR1 but not really")
    samples, problems = read_all(WebDatasetShards(str(tmp_path)), "shard-000000.tar")
    assert [(sample.key, sample.meta) for sample in samples] == [("k0", None), ("k1", {"key": "k1", "index": 1})]
    assert [problem.key for problem in problems] == ["", "k0", "k2"]
    assert "parquet unreadable" in problems[0].reason and "no image member" in problems[2].reason


def test_problems_are_logged_without_a_handler(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "shard-000000.tar").write_bytes(tar_bytes(sample_members(["k0", "k1"], {"k0": b"junk"})))
    with caplog.at_level(logging.WARNING, logger="multimodal_suite.common.webdataset_shards"):
        keys = [sample.key for sample in WebDatasetShards(str(tmp_path)).iter_samples("shard-000000.tar")]
    assert keys == ["k1"]
    assert "shard-000000.tar: sample k0: image k0.jpg does not decode" in caplog.text


def test_shard_range_and_paths(collection: tuple[Path, Path]) -> None:
    root, _ = collection
    view = WebDatasetShards(str(root))
    assert view.shard_range(1, 3).shards == ["shard-000001.tar", "shard-000002.tar"]
    assert view.shard_range(1, 2).shards == ["shard-000001.tar"]
    assert view.shard_range(2).shards == ["shard-000002.tar"] and view.shard_range(0, 100).shards == view.shards
    assert view.shard_range(3, 5).shards == [] and len(view) == 3  # the original view is unchanged
    with pytest.raises(ValueError, match="start <= end"):
        view.shard_range(2, 1)
    with pytest.raises(ValueError):
        view.shard_range(-1, 2)
    part = view.shard_range(1, 2)
    assert part.shard_paths() == [str(root / "shard-000001.tar")]
    assert Path(part.shard_path("shard-000001.tar")).is_file()
    assert part.parquet_path("shard-000001.tar") == str(root / "shard-000001.parquet")
    with pytest.raises(KeyError, match="not one of"):
        part.iter_samples("shard-000000.tar")
    dataset = WebDatasetShardsDataset(filepath=str(root), start_shard=1, end_shard=2)
    assert dataset.load().shards == ["shard-000001.tar"]
    with pytest.raises(DatasetError, match="start_shard <= end_shard"):
        WebDatasetShardsDataset(filepath=str(root), start_shard=2, end_shard=1)


def test_dataset_catalog_errors_and_preview(collection: tuple[Path, Path], tmp_path: Path) -> None:
    root, tags = collection
    catalog = DataCatalog.from_config({
        "source_shards": {
            "type": "multimodal_suite.datasets.webdataset_shards_dataset.WebDatasetShardsDataset",
            "filepath": str(root), "tags_dir": str(tags), "end_shard": 2, "load_args": {"verify_images": False},
        }
    })
    assert catalog.exists("source_shards")
    view = catalog.load("source_shards")
    assert len(view) == 2 and view.verify_images is False
    preview = WebDatasetShardsDataset(filepath=str(root)).preview()
    assert preview["columns"] == ["shard", "samples", "parquet_rows", "size_mb"] and preview["shards"] == 3
    assert [row[:3] for row in preview["data"]] == [["shard-000000.tar", 5, 5], ["shard-000001.tar", 5, 5],
                                                    ["shard-000002.tar", 5, None]]

    missing = WebDatasetShardsDataset(filepath=str(tmp_path / "nowhere"))
    assert not missing.exists() and missing.preview()["data"] == []
    with pytest.raises(DatasetError, match="demo_data"):
        missing.load()
    with pytest.raises(DatasetError, match="read-only"):
        WebDatasetShardsDataset(filepath=str(root)).save({"shard-000003.tar": b""})
    assert not (root / "shard-000003.tar").exists()
    with pytest.raises(DatasetError, match="unknown load_args"):
        WebDatasetShardsDataset(filepath=str(root), load_args={"decode": True})


def test_member_names_and_image_checks() -> None:
    assert split_member_name("dir/000123.jpg") == ("dir/000123", "jpg")
    assert split_member_name("./k0.seg.PNG") == ("k0", "seg.png")
    assert split_member_name("README") == (None, None)
    assert image_problem(png("red")) is None and image_problem(jpeg("red")) is None
    assert image_problem(b"").startswith("empty")
