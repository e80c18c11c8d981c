"""WebDatasetShards against crafted shards: member names that would leave the tags folder, files that are no tar
archive, and the status each sample's problems give it."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from multimodal_suite.common.webdataset_shards import (
    SampleProblem,
    WebDatasetShards,
    is_shard_problem_key,
    kept_problem_code,
    shard_problems,
)

SHARD = "shard-000000.tar"


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), "red").save(buffer, format="JPEG")
    return buffer.getvalue()


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read(view: WebDatasetShards) -> tuple[list, list[SampleProblem]]:
    problems: list[SampleProblem] = []
    return list(view.iter_samples(SHARD, on_problem=problems.append)), problems


@pytest.fixture
def crafted(tmp_path: Path) -> WebDatasetShards:
    """A shard whose members try to name tag files outside the tags folder, beside one honest sample; the tag file
    the first crafted name points at exists."""
    shards, tags = tmp_path / "collection" / "shards", tmp_path / "collection" / "tags"
    shards.mkdir(parents=True)
    tags.mkdir()
    (tags / "good.json").write_text(json.dumps({"tags": ["red"]}))
    (tmp_path / "evil.json").write_text(json.dumps({"tags": ["stolen"]}))  # = <tags>/../../evil.json
    members = [("../../evil.jpg", jpeg()), ("../../evil.json", b"{}"), (f"{tmp_path}/evil.jpg", jpeg()),
               ("dir/sub.jpg", jpeg()), ("a\\b.jpg", jpeg()), ("good.jpg", jpeg()), ("good.json", b"{}")]
    (shards / SHARD).write_bytes(tar_bytes(members))
    return WebDatasetShards(str(shards), tags_url=str(tags))


def test_a_member_name_that_is_not_one_file_name_is_a_problem_naming_it(crafted: WebDatasetShards) -> None:
    samples, problems = read(crafted)
    assert [(sample.key, sample.tags) for sample in samples] == [("good", ["red"])]
    named = {problem.key: problem.reason for problem in problems}
    absolute = [key for key in named if key.startswith("/")]
    assert len(absolute) == 1 and absolute[0].endswith("/evil") and "an absolute path" in named[absolute[0]]
    assert set(named) == {"../../evil", absolute[0], "dir/sub", "a\\b"}
    assert len(problems) == 4  # one per sample, not per member
    assert "'../../evil.jpg'" in named["../../evil"] and named["../../evil"].endswith("skipped")
    assert "'a\\\\b.jpg'" in named["a\\b"]
    unread = shard_problems(crafted, SHARD, problems, {sample.key for sample in samples})
    assert set(unread) == set(named) and all(kept_problem_code(reason) is None for reason in unread.values())


def test_read_tags_never_opens_a_file_outside_its_folder(crafted: WebDatasetShards) -> None:
    assert crafted.read_tags("good") == ["red"]
    for key in ("../../evil", "/etc/passwd", "a/b", "..", ""):
        with pytest.raises(ValueError, match="names no tag file"):
            crafted.read_tags(key)


def test_a_file_that_is_no_tar_archive_is_a_problem_of_the_shard(tmp_path: Path) -> None:
    (tmp_path / SHARD).write_bytes(bytes(range(256)) * 20)
    samples, problems = read(WebDatasetShards(str(tmp_path)))
    assert samples == [] and len(problems) == 1
    assert problems[0].key == "" and "not a tar archive" in problems[0].reason
    unread = shard_problems(WebDatasetShards(str(tmp_path)), SHARD, problems, set())
    assert len(unread) == 1 and is_shard_problem_key(next(iter(unread)), SHARD)
    # an empty archive (just its end marker) is readable: no samples, and no problem either
    (tmp_path / SHARD).write_bytes(tar_bytes([]))
    assert read(WebDatasetShards(str(tmp_path))) == ([], [])


def test_problems_of_a_sample_that_is_still_read_say_so(tmp_path: Path) -> None:
    shards, tags = tmp_path / "shards", tmp_path / "tags"
    shards.mkdir()
    tags.mkdir()
    members = [("k0.jpg", jpeg()), ("k0.json", b"{not json"), ("k1.jpg", jpeg()), ("k2.jpg", b"<html>")]
    (shards / SHARD).write_bytes(tar_bytes(members))
    (tags / "k1.json").write_text("[unclosed")
    samples, problems = read(WebDatasetShards(str(shards), tags_url=str(tags)))
    assert [(sample.key, sample.tags) for sample in samples] == [("k0", None), ("k1", None)]
    codes = {problem.key: kept_problem_code(problem.reason) for problem in problems}
    assert codes == {"k0": "metadata_unreadable", "k1": "tags_unreadable", "k2": None}
    assert not is_shard_problem_key("k0", SHARD) and is_shard_problem_key(f"{SHARD}#parquet", SHARD)


def test_an_unreadable_parquet_is_one_problem_not_two(tmp_path: Path) -> None:
    (tmp_path / SHARD).write_bytes(tar_bytes([("k0.jpg", jpeg())]))
    (tmp_path / "shard-000000.parquet").write_bytes(b"PAR1 not really")
    view = WebDatasetShards(str(tmp_path))
    samples, problems = read(view)
    unread = shard_problems(view, SHARD, problems, {sample.key for sample in samples})
    assert [sample.key for sample in samples] == ["k0"]
    assert len(unread) == 1 and "parquet unreadable" in next(iter(unread.values()))
