"""SafetensorsModelDataset: round trips (local, memory://), missing-model errors, atomic saves, exists, preview."""
from __future__ import annotations

import doctest
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch
import yaml
from kedro.io import DataCatalog, DatasetError

import multimodal_suite.datasets.safetensors_model_dataset as safetensors_module
from multimodal_suite.datasets import SafetensorsModelDataset


def model_dict(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "config": {"hidden": 4, "layers": [1, 2]},
        "state_dict": {"encoder.weight": torch.randn(4, 3, generator=generator),
                       "encoder.bias": torch.randn(4, generator=generator),
                       "steps": torch.tensor([seed], dtype=torch.int64)},
        "metadata": {"best_epoch": seed, "class_names": ["a", "b"]},
    }


def assert_same_model(loaded: dict, saved: dict) -> None:
    assert loaded["config"] == saved["config"] and loaded["metadata"] == saved["metadata"]
    assert set(loaded["state_dict"]) == set(saved["state_dict"])
    for name, tensor in saved["state_dict"].items():
        assert loaded["state_dict"][name].dtype == tensor.dtype
        torch.testing.assert_close(loaded["state_dict"][name], tensor, rtol=0, atol=0)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models" / "bookbert"


@pytest.fixture
def memory_path() -> Iterator[str]:
    # memory:// is one process-wide filesystem; kedro drops the host part of its URLs, so the unique root
    # goes into the path
    root = f"/safetensors-model-test-{uuid.uuid4().hex}"
    yield f"memory://{root}/bookbert"
    memory = fsspec.filesystem("memory")
    if memory.exists(root):
        memory.rm(root, recursive=True)


def test_local_round_trip(model_dir: Path) -> None:
    saved = model_dict(1)
    dataset = SafetensorsModelDataset(filepath=str(model_dir))
    dataset.save(saved)
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((model_dir / "config.json").read_text()) == {"config": saved["config"],
                                                                    "metadata": saved["metadata"]}
    assert_same_model(SafetensorsModelDataset(filepath=str(model_dir)).load(), saved)


def test_metadata_is_optional_and_tensors_leave_the_graph(model_dir: Path) -> None:
    weight = torch.nn.Parameter(torch.ones(2, 2))
    dataset = SafetensorsModelDataset(filepath=str(model_dir))
    dataset.save({"config": {}, "state_dict": {"w": weight * 2}})
    loaded = dataset.load()
    assert loaded["metadata"] == {} and not loaded["state_dict"]["w"].requires_grad
    torch.testing.assert_close(loaded["state_dict"]["w"], torch.full((2, 2), 2.0))


def test_memory_filesystem_round_trip(memory_path: str) -> None:
    first, second = model_dict(1), model_dict(2)
    dataset = SafetensorsModelDataset(filepath=memory_path)
    assert not dataset.exists()
    dataset.save(first)
    assert dataset.exists()
    assert_same_model(SafetensorsModelDataset(filepath=memory_path).load(), first)
    dataset.save(second)  # overwrite in place
    assert_same_model(SafetensorsModelDataset(filepath=memory_path).load(), second)
    assert dataset._describe()["protocol"] == "memory"


def test_missing_model_names_the_directory_and_the_pipeline_to_run(model_dir: Path) -> None:
    dataset = SafetensorsModelDataset(filepath=str(model_dir), producer_pipeline="stage3_train")
    with pytest.raises(DatasetError) as error:
        dataset.load()
    message = str(error.value)
    assert str(model_dir) in message and "kedro run --pipeline stage3_train" in message
    assert "BookBERT" not in message and "pss_train" not in message


def test_missing_model_without_a_producer_says_how_to_find_it(memory_path: str) -> None:
    with pytest.raises(DatasetError, match=r"No model at memory://.*kedro run --to-outputs="):
        SafetensorsModelDataset(filepath=memory_path).load()


def test_weights_without_config_count_as_missing(model_dir: Path) -> None:
    dataset = SafetensorsModelDataset(filepath=str(model_dir), producer_pipeline="pss_train")
    dataset.save(model_dict())
    (model_dir / "config.json").unlink()
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="kedro run --pipeline pss_train"):
        dataset.load()


def test_a_failed_weights_write_keeps_the_old_model_and_leaves_no_debris(model_dir: Path, monkeypatch) -> None:
    old = model_dict(1)
    dataset = SafetensorsModelDataset(filepath=str(model_dir))
    dataset.save(old)

    def half_written(tensors, path, **kwargs):
        Path(path).write_bytes(b"\x00" * 7)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors_module, "save_file", half_written)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save(model_dict(2))
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_model(dataset.load(), old)


def test_a_failed_config_write_leaves_no_model_rather_than_a_mismatched_one(model_dir: Path, monkeypatch) -> None:
    dataset = SafetensorsModelDataset(filepath=str(model_dir))
    dataset.save(model_dict(1))

    def fail(*args, **kwargs):
        raise OSError("interrupted")

    monkeypatch.setattr(safetensors_module, "write_json_atomic", fail)
    with pytest.raises(DatasetError, match="interrupted"):
        dataset.save(model_dict(2))
    # the new weights are in place but without a config the directory holds no loadable model
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="No model at"):
        dataset.load()


def test_exists_tracks_the_directory(model_dir: Path) -> None:
    dataset = SafetensorsModelDataset(filepath=str(model_dir))
    assert not dataset.exists()
    dataset.save(model_dict())
    assert dataset.exists()
    (model_dir / "model.safetensors").unlink()
    assert not dataset.exists()


def test_save_rejects_incomplete_dicts(model_dir: Path) -> None:
    dataset = SafetensorsModelDataset(filepath=str(model_dir))
    with pytest.raises(DatasetError, match="lacks \\['state_dict'\\]"):
        dataset.save({"config": {}})
    with pytest.raises(DatasetError, match="\\['w'\\].*not tensors"):
        dataset.save({"config": {}, "state_dict": {"w": [1.0, 2.0]}})
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_preview_reads_only_the_config_and_header(model_dir: Path) -> None:
    dataset = SafetensorsModelDataset(filepath=str(model_dir))
    assert json.loads(dataset.preview()) == {"filepath": str(model_dir), "exists": False}
    dataset.save(model_dict(3))
    preview = json.loads(dataset.preview())
    assert preview == {"config": {"hidden": 4, "layers": [1, 2]},
                       "metadata": {"best_epoch": 3, "class_names": ["a", "b"]},
                       "tensors": 3, "parameters": 4 * 3 + 4 + 1}
    assert SafetensorsModelDataset.preview.__annotations__["return"] == "JSONPreview"


def test_catalog_entry_of_the_project_builds(tmp_path: Path) -> None:
    catalog_file = Path(__file__).parents[2] / "conf" / "base" / "catalog_pss.yml"
    entry = dict(yaml.safe_load(catalog_file.read_text())["bookbert_model"])
    entry["filepath"] = str(tmp_path / "bookbert")  # the real entry reads an environment variable here
    catalog = DataCatalog.from_config({"bookbert_model": entry})
    catalog.save("bookbert_model", model_dict(4))
    assert_same_model(catalog.load("bookbert_model"), model_dict(4))


def test_docstring_examples_run() -> None:
    result = doctest.testmod(safetensors_module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0
