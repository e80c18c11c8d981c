"""Index choice, build, recall tuning and batched search of :mod:`multimodal_suite.common.vector_index`.

All data are small seeded Gaussian mixtures in 32 dimensions, so every index here trains in about a second.
"""
from __future__ import annotations

import logging
import math
import re

import faiss
import numpy as np
import pytest

from multimodal_suite.common.faiss_index import IndexBundle
from multimodal_suite.common.vector_index import (
    MIN_TRAIN_POINTS_PER_CENTROID,
    SearchTuning,
    build_index,
    choose_index_factory,
    normalize_rows,
    plan_index,
    refine_k_factor,
    search_batched,
    search_params,
    tune_search,
)

DIM = 32
K = 10


def mixture(n: int, *, spread: float, seed: int, clusters: int = 200, centers_seed: int = 0) -> np.ndarray:
    """``n`` float32 points around ``clusters`` fixed centres; larger ``spread`` means more overlapping clusters.

    The centres depend only on ``centers_seed``, so calls with other ``seed`` values draw from the same mixture.
    """
    centers = np.random.default_rng(centers_seed).standard_normal((clusters, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.integers(clusters, size=n)
    return centers[labels] + spread * rng.standard_normal((n, DIM)).astype(np.float32)


def exact_recall(index: faiss.Index, queries: np.ndarray, base: np.ndarray, k: int = K) -> float:
    """recall@k of ``index`` against brute-force inner product over ``base`` (both sides normalised)."""
    xq, xb = normalize_rows(queries), normalize_rows(base)
    _, truth = faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    _, found = index.search(xq, k)
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    """30k clustered vectors: ``auto`` picks IVF512,Flat for them."""
    return mixture(30_000, spread=0.7, seed=1)


@pytest.fixture(scope="module")
def overlapping() -> tuple[np.ndarray, np.ndarray]:
    """20k normalised indexed vectors and 500 held-out queries from strongly overlapping clusters, where IVF needs
    several probes and PQ codes alone rank poorly."""
    points = normalize_rows(mixture(20_500, spread=1.0, seed=2))
    return points[:20_000], points[20_000:]


@pytest.fixture(scope="module")
def ivf64(overlapping) -> faiss.Index:
    base, _ = overlapping
    index = faiss.index_factory(DIM, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(base)
    index.add(base)
    index.nprobe = 4
    return index


# --- index choice -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 500, 19_999])
def test_small_collections_are_flat(n):
    plan = plan_index(n, DIM)
    assert plan.factory == "Flat"
    assert plan.nlist is None
    assert plan.memory_mb == pytest.approx(n * DIM * 4 / 2**20)


@pytest.mark.parametrize(
    ("n", "train_sample", "expected"),
    [
        (20_000, 100_000, "IVF512,Flat"),  # 4*sqrt(20k) ~ 566 -> 512, and 20k / 512 >= 39 still
        (30_000, 100_000, "IVF512,Flat"),
        (100_000, 100_000, "IVF1024,Flat"),
        (100_000, 30_000, "IVF512,Flat"),  # the sample caps 1024 lists to 512: 30k / 1024 < 39
        (999_999, 100_000, "IVF2048,Flat"),  # wants 4096, 100k training points allow 2048
    ],
)
def test_mid_size_is_ivf_flat_with_power_of_two_lists(n, train_sample, expected):
    plan = plan_index(n, DIM, train_sample=train_sample)
    assert plan.factory == expected
    assert choose_index_factory(n, DIM, train_sample=train_sample) == expected
    nlist = plan.nlist
    assert nlist is not None and f"IVF{nlist}," in plan.factory
    assert nlist & (nlist - 1) == 0, "nlist must be a power of two"
    assert min(train_sample, n) / nlist >= MIN_TRAIN_POINTS_PER_CENTROID


@pytest.mark.parametrize("n", range(20_000, 1_000_000, 37_001))
@pytest.mark.parametrize("train_sample", [100_000, 40_000, 20_000])
def test_ivf_lists_always_respect_training_points(n, train_sample):
    plan = plan_index(n, DIM, train_sample=train_sample)
    if plan.factory.startswith("IVF"):
        assert plan.nlist & (plan.nlist - 1) == 0
        assert min(train_sample, n) / plan.nlist >= MIN_TRAIN_POINTS_PER_CENTROID
        # never more than the power of two nearest 4*sqrt(n) (on a log scale)
        assert plan.nlist <= 2 ** round(math.log2(4 * math.sqrt(n)))
    else:
        assert plan.factory == "HNSW32"


def test_small_training_sample_picks_hnsw():
    # 5k training points allow 128 lists; 100k vectors want 1024: too coarse for IVF
    plan = plan_index(100_000, DIM, train_sample=5_000)
    assert plan.factory == "HNSW32"
    assert plan.nlist is None
    assert plan.memory_mb == pytest.approx(100_000 * (4 * DIM + 272) / 2**20)
    # the same size with a full sample stays IVF
    assert plan_index(100_000, DIM, train_sample=100_000).factory.startswith("IVF")


@pytest.mark.parametrize(
    ("n", "dim", "expected"),
    [
        (1_000_000, 256, "IVF2048,PQ32,RFlat"),
        (1_000_000, 768, "IVF2048,PQ64,RFlat"),  # capped at 64 bytes
        (1_000_000, 100, "IVF2048,PQ10,RFlat"),  # largest divisor of 100 not above 12
        (50_000_000, 256, "IVF2048,PQ32,RFlat"),
    ],
)
def test_large_collections_are_ivf_pq_with_exact_reranking(n, dim, expected):
    plan = plan_index(n, dim)
    assert plan.factory == expected
    assert plan.nlist == 2048
    # the re-ranking keeps the float32 vectors: never smaller than Flat
    assert plan.memory_mb > n * dim * 4 / 2**20
    # FAISS accepts the string (constructing an untrained index is cheap)
    assert faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT).d == dim


def test_opq_prefix():
    factory = choose_index_factory(1_000_000, 256, opq=True)
    assert factory == "OPQ32,IVF2048,PQ32,RFlat"
    assert choose_index_factory(1_000_000, 256, opq=False) == "IVF2048,PQ32,RFlat"
    assert faiss.index_factory(256, factory, faiss.METRIC_INNER_PRODUCT).d == 256
    # OPQ only rotates PQ codes: no prefix on indexes without PQ
    assert choose_index_factory(100_000, 256, opq=True) == "IVF1024,Flat"


def test_memory_budget_pushes_mid_size_to_pq(caplog):
    n, dim = 100_000, 128
    ivf_flat = plan_index(n, dim)
    assert ivf_flat.factory == "IVF1024,Flat"
    assert plan_index(n, dim, ivf_flat.memory_mb).factory == "IVF1024,Flat", "a budget equal to the estimate fits"
    with caplog.at_level(logging.WARNING, logger="multimodal_suite.common.vector_index"):
        pq = plan_index(n, dim, memory_budget_mb=ivf_flat.memory_mb - 0.5)
    assert pq.factory == "IVF1024,PQ16,RFlat"
    assert "over budget" in pq.reason
    # IVF-PQ with re-ranking is no smaller, so the budget is still exceeded and a warning says so
    assert pq.memory_mb > ivf_flat.memory_mb
    assert any("over the budget" in record.getMessage() for record in caplog.records)


def test_tiny_collection_over_budget_stays_flat(caplog):
    with caplog.at_level(logging.WARNING, logger="multimodal_suite.common.vector_index"):
        plan = plan_index(5_000, 128, memory_budget_mb=1.0)
    assert plan.factory == "Flat"
    assert plan.memory_mb > 1.0
    assert any("too few to train a PQ codebook" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(("n", "dim"), [(0, 32), (10, 0), (-1, 8)])
def test_plan_rejects_empty_sizes(n, dim):
    with pytest.raises(ValueError, match="at least one vector"):
        plan_index(n, dim)


# --- build_index --------------------------------------------------------------------------------------------


def test_build_auto_records_its_choice_and_reaches_target(clustered):
    vectors = clustered.copy()
    bundle = build_index(vectors, None, "auto", held_out_queries=500, seed=3)
    info = bundle.info
    assert np.array_equal(vectors, clustered), "the caller's vectors must not be normalised in place"
    assert info["factory"] == choose_index_factory(len(clustered), DIM) == "IVF512,Flat"
    assert info["chosen_by"] == "auto"
    assert "mid-size" in info["reason"]
    assert info["memory_budget_mb"] is None
    assert info["memory_mb_estimate"] == pytest.approx(plan_index(len(clustered), DIM).memory_mb, abs=0.1)
    assert info["metric"] == "inner_product"
    assert info["normalized"] is True
    assert (info["dim"], info["ntotal"], info["nlist"]) == (DIM, 30_000, 512)
    assert (info["k"], info["target_recall"], info["recall_queries"], info["seed"]) == (K, 0.95, 500, 3)
    assert info["train_sample"] == 30_000
    assert info["search_param"] == "nprobe"
    assert info["nprobe"] in range(2, 512)  # tuned: more than one list, fewer than all
    assert bundle.index.nprobe == info["nprobe"], "the tuned value must be left on the index"
    assert info["recall_at_k"] >= info["target_recall"]
    assert isinstance(info["build_seconds"], float) and isinstance(info["tune_seconds"], float)
    assert bundle.ntotal == 30_000 and bundle.ids is None
    # fresh queries from the same mixture, never indexed, land close to the measured recall
    queries = mixture(300, spread=0.7, seed=4)
    assert exact_recall(bundle.index, queries, clustered) >= 0.9


def test_build_explicit_factory_with_ids(clustered):
    ids = np.arange(len(clustered), dtype=np.int64) * 3 + 1_000
    bundle = build_index(clustered, ids, "IVF64,Flat", train_sample=10_000, held_out_queries=400)
    info = bundle.info
    assert info["factory"] == "IVF64,Flat"
    assert info["chosen_by"] == "params"
    assert "reason" not in info and "memory_mb_estimate" not in info
    assert (info["nlist"], info["train_sample"], info["ntotal"]) == (64, 10_000, 30_000)
    assert info["search_param"] == "nprobe" and bundle.index.nprobe == info["nprobe"]
    assert info["recall_at_k"] >= info["target_recall"] == 0.95
    np.testing.assert_array_equal(bundle.ids, ids)
    # an indexed vector finds itself first, under its external id
    _, found = search_batched(bundle, clustered[[5, 17]], k=1)
    np.testing.assert_array_equal(found[:, 0], ids[[5, 17]])


def test_build_auto_hnsw_tunes_ef_search(overlapping):
    base, queries = overlapping
    bundle = build_index(base, None, "auto", train_sample=2_000, held_out_queries=300, target_recall=0.9)
    info = bundle.info
    assert info["factory"] == "HNSW32"
    assert info["search_param"] == "efSearch"
    assert info["efSearch"] >= K
    assert info["train_sample"] == 0, "HNSW needs no training"
    assert info["nlist"] is None
    assert info["recall_at_k"] >= 0.9
    assert exact_recall(bundle.index, queries, base) >= 0.85


def test_build_flat_is_exact_and_untuned():
    vectors = mixture(800, spread=0.7, seed=5)
    bundle = build_index(vectors, None, held_out_queries=100)
    info = bundle.info
    assert info["factory"] == "Flat"
    assert info["search_param"] is None and "nprobe" not in info and "efSearch" not in info
    assert info["recall_at_k"] == 1.0
    assert info["train_sample"] == 0


def test_build_with_fewer_vectors_than_k():
    bundle = build_index(mixture(5, spread=0.7, seed=6), None, k=K)
    assert bundle.info["ntotal"] == 5
    assert bundle.info["recall_queries"] == 5
    assert bundle.info["recall_at_k"] == 1.0


# --- tune_search --------------------------------------------------------------------------------------------


def test_tune_nprobe_is_the_smallest_reaching_target(overlapping):
    base, queries = overlapping
    index = faiss.index_factory(DIM, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(base)
    index.add(base)
    target = 0.9
    tuning = tune_search(index, base, queries, K, target)
    assert tuning.param == "nprobe"
    assert tuning.value > 1, "data too easy for this test: a single probe already reaches the target"
    assert index.nprobe == tuning.value
    at_value = exact_recall(index, queries, base)
    assert at_value >= target
    assert tuning.recall_at_k == pytest.approx(at_value)
    index.nprobe = tuning.value - 1
    assert exact_recall(index, queries, base) < target


def test_tune_ef_search_is_the_smallest_reaching_target(overlapping):
    base, queries = overlapping
    index = faiss.index_factory(DIM, "HNSW32", faiss.METRIC_INNER_PRODUCT)
    index.add(base)
    target = 0.97
    tuning = tune_search(index, base, queries, K, target)
    assert tuning.param == "efSearch"
    assert tuning.value > K
    assert exact_recall(index, queries, base) >= target
    index.hnsw.efSearch = tuning.value - 1
    assert exact_recall(index, queries, base) < target


def test_reranking_reaches_a_target_plain_pq_cannot(overlapping, caplog):
    base, queries = overlapping
    queries = queries[:300]
    # 4-bit PQ trains in a fraction of the time of 8-bit codes and ranks just as coarsely
    plain = faiss.index_factory(DIM, "IVF16,PQ8x4", faiss.METRIC_INNER_PRODUCT)
    plain.train(base)
    refined_base = faiss.clone_index(plain)
    refined = faiss.IndexRefineFlat(refined_base)
    plain.add(base)
    refined.add(base)
    target = 0.95

    with caplog.at_level(logging.WARNING, logger="multimodal_suite.common.vector_index"):
        plain_tuning = tune_search(plain, base, queries, K, target)
    assert plain_tuning.recall_at_k < target
    assert any("never reaches" in record.getMessage() for record in caplog.records)

    tuning = tune_search(refined, base, queries, K, target)
    assert tuning.param == "nprobe"
    assert tuning.recall_at_k >= target
    k_factor = refine_k_factor(refined)
    assert k_factor is not None and 1 <= k_factor <= 64
    assert search_params(refined) == {"nprobe": tuning.value, "k_factor_rf": k_factor}
    assert exact_recall(refined, queries, base) >= target
    # both parameters are minimal: one less of either misses the target
    if k_factor > 1:
        refined.k_factor = k_factor - 1
        assert exact_recall(refined, queries, base) < target
        refined.k_factor = k_factor
    if tuning.value > 1:
        faiss.extract_index_ivf(refined).nprobe = tuning.value - 1
        assert exact_recall(refined, queries, base) < target


def test_tune_hnsw_with_reranking_tunes_ef_search(overlapping):
    base, queries = overlapping
    index = faiss.index_factory(DIM, "HNSW32,RFlat", faiss.METRIC_INNER_PRODUCT)
    index.add(base)
    tuning = tune_search(index, base, queries, K, 0.99)
    # plain HNSW32 reaches 0.99 here with efSearch ~64; exact re-ranking can only help
    assert tuning.recall_at_k >= 0.99
    assert "efSearch" in search_params(index)


def test_tune_flat_has_no_parameter(overlapping):
    base, queries = overlapping
    index = faiss.IndexFlatIP(DIM)
    index.add(base)
    assert tune_search(index, base, queries, K) == SearchTuning(None, None, 1.0)


def test_tune_leave_one_out_excludes_the_query_itself(overlapping):
    base, _ = overlapping
    index = faiss.IndexFlatIP(DIM)
    index.add(base)
    rows = np.arange(0, 20_000, 97)
    tuning = tune_search(index, base, base[rows], K, query_rows=rows)
    assert tuning.recall_at_k == 1.0
    with pytest.raises(ValueError, match="query_rows"):
        tune_search(index, base, base[rows], K, query_rows=rows[:-1])


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01, float("nan")])
def test_tune_rejects_target_outside_unit_interval(ivf64, overlapping, target):
    base, queries = overlapping
    with pytest.raises(ValueError, match="target_recall"):
        tune_search(ivf64, base, queries, K, target)


# --- search_batched -----------------------------------------------------------------------------------------


def test_batch_size_does_not_change_results(ivf64, overlapping):
    _, queries = overlapping
    queries = queries[:60]
    scores_1, ids_1 = search_batched(ivf64, queries, K, batch_size=1)
    for batch_size in (7, len(queries)):
        scores, ids = search_batched(ivf64, queries, K, batch_size=batch_size)
        np.testing.assert_array_equal(ids, ids_1)
        np.testing.assert_array_equal(scores, scores_1)
    assert ids_1.shape == (60, K) and ids_1.dtype == np.int64 and scores_1.dtype == np.float32
    assert np.all(np.diff(scores_1, axis=1) <= 0), "best first"


def test_batch_size_on_flat_keeps_neighbours(overlapping):
    # exact search switches to BLAS from 20 queries on, which may move scores in the last bit
    base, queries = overlapping
    index = faiss.IndexFlatIP(DIM)
    index.add(base)
    scores_1, ids_1 = search_batched(index, queries[:50], K, batch_size=1)
    for batch_size in (7, 50):
        scores, ids = search_batched(index, queries[:50], K, batch_size=batch_size)
        np.testing.assert_array_equal(ids, ids_1)
        np.testing.assert_allclose(scores, scores_1, atol=1e-6)


def test_bundle_maps_rows_to_external_ids(ivf64, overlapping):
    _, queries = overlapping
    external = np.random.default_rng(7).permutation(ivf64.ntotal).astype(np.int64) + 10**9
    scores_rows, rows = search_batched(ivf64, queries[:40], K)
    scores_ids, ids = search_batched(IndexBundle(ivf64, ids=external), queries[:40], K)
    np.testing.assert_array_equal(ids, external[rows])
    np.testing.assert_array_equal(scores_ids, scores_rows)


def test_queries_are_normalised(overlapping):
    base, queries = overlapping
    index = faiss.IndexFlatIP(DIM)
    index.add(base)
    scale = np.random.default_rng(8).uniform(0.01, 50.0, size=(50, 1)).astype(np.float32)
    scores, ids = search_batched(index, queries[:50], K)
    scaled_scores, scaled_ids = search_batched(index, queries[:50] * scale, K)
    np.testing.assert_array_equal(scaled_ids, ids)
    np.testing.assert_allclose(scaled_scores, scores, atol=1e-5)
    assert scores.max() <= 1.0 + 1e-5, "cosine similarities"
    # an indexed vector, scaled, finds itself with similarity 1
    self_scores, self_ids = search_batched(index, base[[3, 9]] * 7.5, 1)
    np.testing.assert_array_equal(self_ids[:, 0], [3, 9])
    np.testing.assert_allclose(self_scores[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("with_ids", [False, True])
def test_k_beyond_ntotal_pads(overlapping, with_ids):
    base, queries = overlapping
    index = faiss.IndexFlatIP(DIM)
    index.add(base[:5])
    target = IndexBundle(index, ids=np.arange(100, 105)) if with_ids else index
    scores, ids = search_batched(target, queries[:3], 8, batch_size=2)
    assert ids.shape == scores.shape == (3, 8)
    assert np.all(ids[:, 5:] == -1)
    assert np.all(np.isneginf(scores[:, 5:]))
    expected = set(range(100, 105)) if with_ids else set(range(5))
    assert all(set(row[:5]) == expected for row in ids)
    assert np.all(np.isfinite(scores[:, :5]))


def test_search_rejects_bad_arguments(ivf64, overlapping):
    _, queries = overlapping
    with pytest.raises(ValueError, match="k must be"):
        search_batched(ivf64, queries, 0)
    with pytest.raises(ValueError, match="width"):
        search_batched(ivf64, queries[:, :16], K)


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["IVF64,Bogus", "NotAnIndex"])
def test_invalid_factory_is_named(factory):
    with pytest.raises(ValueError, match=re.escape(repr(factory))):
        build_index(mixture(200, spread=0.7, seed=9), None, factory)


def test_zero_vectors_rejected():
    with pytest.raises(ValueError, match="zero vectors"):
        build_index(np.zeros((0, DIM), dtype=np.float32), None)


@pytest.mark.parametrize("n_ids", [199, 201])
def test_wrong_ids_length_rejected(n_ids):
    with pytest.raises(ValueError, match="one id per vector"):
        build_index(mixture(200, spread=0.7, seed=10), np.arange(n_ids), "Flat")


@pytest.mark.parametrize("target", [0.0, 1.5])
def test_build_rejects_target_outside_unit_interval(target):
    with pytest.raises(ValueError, match="target_recall"):
        build_index(mixture(200, spread=0.7, seed=11), None, target_recall=target)


def test_normalize_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    out = normalize_rows(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    assert normalize_rows(out) is out, "already-normalised float32 input is not copied"
    with pytest.raises(ValueError, match="2-D"):
        normalize_rows(np.ones(4))
