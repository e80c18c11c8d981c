"""FaissIndexDataset and the index functions in common: round trips, sidecar, ids, search parameters, devices."""
from __future__ import annotations

import doctest
import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from kedro.io import DataCatalog, DatasetError

import multimodal_suite.datasets.faiss_index_dataset as faiss_index_module
from multimodal_suite.common.faiss_index import (
    IndexBundle,
    current_search_params,
    gpu_support,
    set_search_param,
    to_cpu,
    to_search_device,
)
from multimodal_suite.datasets import FaissIndexDataset

DIM = 16


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((600, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((20, DIM)).astype(np.float32)


def build(factory: str, vectors: np.ndarray, metric: int = faiss.METRIC_L2) -> faiss.Index:
    index = faiss.index_factory(DIM, factory, metric)
    index.train(vectors)
    index.add(vectors)
    return index


def sidecar_of(path: Path) -> dict:
    return json.loads((path / "index.json").read_text())


def test_flat_round_trip_with_ids(tmp_path: Path, vectors: np.ndarray, queries: np.ndarray) -> None:
    index = build("Flat", vectors, faiss.METRIC_INNER_PRODUCT)
    ids = np.arange(len(vectors), dtype=np.int64) * 10 + 7
    dataset = FaissIndexDataset(filepath=str(tmp_path / "tag_index"))
    dataset.save(IndexBundle(index, {"factory": "Flat", "k": 10, "recall_at_k": 1.0, "source": "unit test"}, ids))

    bundle = dataset.load()
    expected_scores, expected_rows = index.search(queries, 5)
    scores, rows = bundle.index.search(queries, 5)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores)
    np.testing.assert_array_equal(bundle.ids, ids)
    _, found = bundle.search(queries, 5)
    np.testing.assert_array_equal(found, ids[expected_rows])

    sidecar = sidecar_of(tmp_path / "tag_index")
    assert sidecar == {
        "format_version": 1,
        "factory": "Flat",
        "k": 10,
        "recall_at_k": 1.0,
        "source": "unit test",
        "dim": DIM,
        "ntotal": len(vectors),
        "metric": "inner_product",
        "is_trained": True,
        "ids_file": "ids.npy",
    }
    assert bundle.info["metric"] == "inner_product" and "ids_file" not in bundle.info
    assert sorted(p.name for p in (tmp_path / "tag_index").iterdir()) == ["ids.npy", "index.faiss", "index.json"]


def test_ivf_round_trip_restores_nprobe(tmp_path: Path, vectors: np.ndarray, queries: np.ndarray) -> None:
    index = build("IVF16,Flat", vectors)
    set_search_param(index, "nprobe", 4)
    expected = index.search(queries, 10)

    dataset = FaissIndexDataset(filepath=str(tmp_path / "ivf"))
    dataset.save(IndexBundle(index, {"factory": "IVF16,Flat", "recall_at_k": 0.93, "k": 10}))
    assert sidecar_of(tmp_path / "ivf")["nprobe"] == 4  # read off the index when info does not say

    bundle = dataset.load()
    assert faiss.extract_index_ivf(bundle.index).nprobe == 4
    assert bundle.info["nprobe"] == 4 and bundle.ids is None
    result = bundle.index.search(queries, 10)
    np.testing.assert_array_equal(result[1], expected[1])
    np.testing.assert_allclose(result[0], expected[0])
    # with row numbers as ids, bundle.search returns the rows
    np.testing.assert_array_equal(bundle.search(queries, 10)[1], expected[1])


def test_info_nprobe_wins_and_load_args_override_it(tmp_path: Path, vectors: np.ndarray) -> None:
    index = build("IVF16,Flat", vectors)  # nprobe 1 on the index itself
    FaissIndexDataset(filepath=str(tmp_path / "ivf")).save(IndexBundle(index, {"nprobe": 8}))
    assert faiss.extract_index_ivf(FaissIndexDataset(filepath=str(tmp_path / "ivf")).load().index).nprobe == 8

    tuned = FaissIndexDataset(filepath=str(tmp_path / "ivf"), load_args={"search_params": {"nprobe": 16}}).load()
    assert faiss.extract_index_ivf(tuned.index).nprobe == 16
    assert tuned.info["nprobe"] == 16


def test_hnsw_round_trip_restores_ef_search(tmp_path: Path, vectors: np.ndarray, queries: np.ndarray) -> None:
    index = build("HNSW8", vectors)
    set_search_param(index, "efSearch", 48)
    dataset = FaissIndexDataset(filepath=str(tmp_path / "hnsw"))
    dataset.save(IndexBundle(index, {"factory": "HNSW8"}))
    bundle = dataset.load()
    assert current_search_params(to_cpu(bundle.index)) == {"efSearch": 48}
    np.testing.assert_array_equal(bundle.index.search(queries, 5)[1], index.search(queries, 5)[1])


def test_unknown_search_param_names_the_fix(tmp_path: Path, vectors: np.ndarray) -> None:
    FaissIndexDataset(filepath=str(tmp_path / "flat")).save(IndexBundle(build("Flat", vectors), {"nprobe": 4}))
    with pytest.raises(DatasetError, match=r"cannot set nprobe=4 on a IndexFlat\w* index.*fix 'nprobe' in index.json"):
        FaissIndexDataset(filepath=str(tmp_path / "flat")).load()


def test_saving_without_ids_removes_stale_ids(tmp_path: Path, vectors: np.ndarray) -> None:
    dataset = FaissIndexDataset(filepath=str(tmp_path / "idx"))
    dataset.save(IndexBundle(build("Flat", vectors), {}, np.arange(len(vectors))))
    assert (tmp_path / "idx" / "ids.npy").exists()
    dataset.save(IndexBundle(build("Flat", vectors[:100]), {}))
    assert not (tmp_path / "idx" / "ids.npy").exists()
    bundle = dataset.load()
    assert bundle.ids is None and bundle.ntotal == 100


def test_inline_ids_in_the_sidecar_are_read(tmp_path: Path, vectors: np.ndarray) -> None:
    dataset = FaissIndexDataset(filepath=str(tmp_path / "idx"))
    dataset.save(IndexBundle(build("Flat", vectors[:3]), {}))
    sidecar = sidecar_of(tmp_path / "idx")
    sidecar["ids"] = [5, 6, 7]
    (tmp_path / "idx" / "index.json").write_text(json.dumps(sidecar))
    np.testing.assert_array_equal(dataset.load().ids, [5, 6, 7])


def test_bundle_and_save_validation(tmp_path: Path, vectors: np.ndarray) -> None:
    index = build("Flat", vectors[:10])
    with pytest.raises(ValueError, match="9 ids for an index of 10 vectors"):
        IndexBundle(index, {}, np.arange(9))
    with pytest.raises(ValueError, match="1-D integer array"):
        IndexBundle(index, {}, np.zeros(10, dtype=np.float32))
    dataset = FaissIndexDataset(filepath=str(tmp_path / "idx"))
    with pytest.raises(DatasetError, match="reserved"):
        dataset.save(IndexBundle(index, {"ids": [1]}))
    with pytest.raises(DatasetError, match="saves IndexBundle objects; got IndexFlat"):
        dataset.save(index)
    assert not dataset.exists()


def test_numpy_values_in_info_are_stored_as_plain_json(tmp_path: Path, vectors: np.ndarray) -> None:
    info = {"recall_at_k": np.float32(0.875), "k": np.int64(10), "per_query": np.array([1.0, 0.5])}
    dataset = FaissIndexDataset(filepath=str(tmp_path / "idx"))
    dataset.save(IndexBundle(build("Flat", vectors[:10]), info))
    sidecar = sidecar_of(tmp_path / "idx")
    assert (sidecar["recall_at_k"], sidecar["k"], sidecar["per_query"]) == (0.875, 10, [1.0, 0.5])


def test_to_search_device_on_cpu_searches_identically(vectors: np.ndarray, queries: np.ndarray) -> None:
    index = build("IVF16,Flat", vectors)
    set_search_param(index, "nprobe", 3)
    expected = index.search(queries, 5)
    for use_gpu in ("auto", False):
        device_index = to_search_device(index, use_gpu=use_gpu)
        if not gpu_support():
            assert device_index is index
        result = device_index.search(queries, 5)
        np.testing.assert_array_equal(result[1], expected[1])
        np.testing.assert_allclose(result[0], expected[0], rtol=1e-5)
        assert to_cpu(device_index).ntotal == index.ntotal
    with pytest.raises(ValueError, match="use_gpu must be"):
        to_search_device(index, use_gpu="sometimes")


@pytest.mark.skipif(gpu_support(), reason="checks the error on machines without GPUs")
def test_to_search_device_requiring_gpu_without_one_fails_clearly(vectors: np.ndarray) -> None:
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        to_search_device(build("Flat", vectors), use_gpu=True)


def test_catalog_from_yaml_config(tmp_path: Path, vectors: np.ndarray, queries: np.ndarray) -> None:
    catalog = DataCatalog.from_config(
        {
            "tag_index": {
                "type": "multimodal_suite.datasets.FaissIndexDataset",
                "filepath": str(tmp_path / "tag_index"),
                "load_args": {"use_gpu": False, "search_params": {"nprobe": 2}},
            }
        }
    )
    index = build("IVF16,Flat", vectors)
    catalog.save("tag_index", IndexBundle(index, {"factory": "IVF16,Flat"}))
    bundle = catalog.load("tag_index")
    assert isinstance(catalog["tag_index"], FaissIndexDataset)
    assert faiss.extract_index_ivf(bundle.index).nprobe == 2
    set_search_param(index, "nprobe", 2)
    np.testing.assert_array_equal(bundle.index.search(queries, 3)[1], index.search(queries, 3)[1])


def test_preview_summarises_the_sidecar(tmp_path: Path, vectors: np.ndarray) -> None:
    dataset = FaissIndexDataset(filepath=str(tmp_path / "idx"))
    assert json.loads(dataset.preview()) == {}
    dataset.save(IndexBundle(build("IVF16,Flat", vectors), {"factory": "IVF16,Flat", "k": 10, "recall_at_k": 0.9}))
    assert json.loads(dataset.preview()) == {
        "factory": "IVF16,Flat",
        "metric": "l2",
        "dim": DIM,
        "ntotal": len(vectors),
        "nprobe": 1,
        "k": 10,
        "recall_at_k": 0.9,
        "has_ids": False,
    }


def test_docstring_examples_run(tmp_path: Path) -> None:
    result = doctest.testmod(faiss_index_module, extraglobs={"tmp_path": tmp_path}, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_non_local_filesystem_round_trip(vectors: np.ndarray, queries: np.ndarray) -> None:
    index = build("IVF16,Flat", vectors)
    dataset = FaissIndexDataset(filepath="memory://faiss-index-test/tag_index")
    dataset.save(IndexBundle(index, {"nprobe": 4}, np.arange(len(vectors)) + 100))
    bundle = dataset.load()
    set_search_param(index, "nprobe", 4)
    np.testing.assert_array_equal(bundle.search(queries, 3)[1], index.search(queries, 3)[1] + 100)
