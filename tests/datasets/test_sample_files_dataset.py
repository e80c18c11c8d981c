"""SampleFilesDataset: round trip of nested files, lazy loaders, and the guard that protects real data."""
from __future__ import annotations

from pathlib import Path

import pytest
from kedro.io import DataCatalog, DatasetError

from multimodal_suite.datasets.generated_folder import SAMPLE_MARKER
from multimodal_suite.datasets.sample_files_dataset import SampleFilesDataset

FILES = {
    "shard-000001.tar": b"tar one",
    "shard-000000.tar": b"tar zero",
    "00290/00290_000.jpg": b"\xff\xd8 image",
    "00290/deeper/note.json": b'{"tags": []}',
    "empty.bin": b"",
}


def test_round_trip_with_lazy_loaders(tmp_path: Path) -> None:
    dataset = SampleFilesDataset(filepath=str(tmp_path / "files"))
    assert not dataset.exists()
    dataset.save(FILES)
    assert dataset.exists() and (tmp_path / "files" / SAMPLE_MARKER).is_file()
    for key, data in FILES.items():
        assert (tmp_path / "files" / key).read_bytes() == data

    loaded = dataset.load()
    assert list(loaded) == sorted(FILES)  # the marker is not listed
    assert {key: loader() for key, loader in loaded.items()} == FILES

    (tmp_path / "files" / "shard-000000.tar").write_bytes(b"changed after load")
    assert loaded["shard-000000.tar"]() == b"changed after load"  # read on call, not at load


def test_guard_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    real = tmp_path / "collection"
    (real / "00290").mkdir(parents=True)
    (real / "00290" / "photo.jpg").write_bytes(b"precious")
    dataset = SampleFilesDataset(filepath=str(real))
    with pytest.raises(DatasetError, match=SAMPLE_MARKER):
        dataset.save(FILES)
    assert (real / "00290" / "photo.jpg").read_bytes() == b"precious"
    assert not (real / "shard-000000.tar").exists() and not (real / SAMPLE_MARKER).exists()
    assert list(dataset.load()) == ["00290/photo.jpg"]  # reading a real collection is fine


def test_resave_replaces_the_previous_samples(tmp_path: Path) -> None:
    dataset = SampleFilesDataset(filepath=str(tmp_path / "files"))
    dataset.save(FILES)
    dataset.save({"00291/00291_000.jpg": b"new"})
    assert {key: loader() for key, loader in dataset.load().items()} == {"00291/00291_000.jpg": b"new"}
    assert not (tmp_path / "files" / "00290").exists()
    assert (tmp_path / "files" / SAMPLE_MARKER).is_file()


@pytest.mark.parametrize("key", ["../escape.txt", "/abs.txt", "a//b.txt", "a/./b.txt", ".hidden", "a/.tmp/b",
                                 "win\\path.txt", ""])
def test_keys_that_could_escape_or_hide_are_refused_before_writing(tmp_path: Path, key: str) -> None:
    dataset = SampleFilesDataset(filepath=str(tmp_path / "files"))
    with pytest.raises(DatasetError, match="nothing written"):
        dataset.save({"fine.txt": b"ok", key: b"bad"})
    assert not (tmp_path / "files").exists()


def test_hidden_files_are_not_listed(tmp_path: Path) -> None:
    dataset = SampleFilesDataset(filepath=str(tmp_path))
    dataset.save({"a.txt": b"a"})
    (tmp_path / ".a.txt.123.tmp").write_bytes(b"left by an interrupted write")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x").write_bytes(b"x")
    assert list(dataset.load()) == ["a.txt"]


def test_catalog_preview_and_missing_folder(tmp_path: Path) -> None:
    catalog = DataCatalog.from_config({
        "tagging_target_files": {
            "type": "multimodal_suite.datasets.sample_files_dataset.SampleFilesDataset",
            "filepath": str(tmp_path / "target"),
        }
    })
    catalog.save("tagging_target_files", FILES)
    assert sorted(catalog.load("tagging_target_files")) == sorted(FILES)

    dataset = SampleFilesDataset(filepath=str(tmp_path / "target"))
    preview = dataset.preview(nrows=2)
    assert preview["columns"] == ["path", "size_bytes"] and preview["files"] == len(FILES)
    assert preview["data"] == [["00290/00290_000.jpg", len(FILES["00290/00290_000.jpg"])],
                               ["00290/deeper/note.json", len(FILES["00290/deeper/note.json"])]]
    assert dataset._describe() == {"filepath": str(tmp_path / "target"), "protocol": "file"}

    missing = SampleFilesDataset(filepath=str(tmp_path / "nowhere"))
    assert missing.preview()["data"] == [] and not missing.exists()
    with pytest.raises(DatasetError, match="demo_data"):
        missing.load()
