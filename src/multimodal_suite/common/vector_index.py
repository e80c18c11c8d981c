"""Cosine-similarity FAISS indexes: choose the index type, build it, tune its search to a measured recall, search it.

Every index here uses the inner-product metric on L2-normalised vectors, so scores are cosine similarities:
:func:`build_index` normalises the vectors it indexes and :func:`search_batched` the queries it searches.

- :func:`choose_index_factory` picks a FAISS factory string from the collection size, the vector width and a
  memory budget, following autofaiss's rules (exact ``Flat`` → ``IVF,Flat`` → ``IVF,PQ`` with exact re-ranking).
- :func:`build_index` trains on a seeded sample, adds every vector and calls :func:`tune_search`, which sets the
  smallest ``nprobe``/``efSearch`` (and re-ranking ``k_factor_rf``) whose recall@k against exact search on
  held-out queries reaches the target, and records what it measured in the bundle's ``info``.
- :func:`search_batched` searches a bundle or a bare index (CPU, or replicated to GPUs by
  :func:`~multimodal_suite.common.faiss_index.to_search_device`) in batches, returning external ids.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import faiss
import numpy as np
from tqdm.auto import tqdm

from .batching import DynamicBatcher
from .faiss_index import IndexBundle, current_search_params, set_search_param

logger = logging.getLogger(__name__)

FLAT_MAX_VECTORS = 20_000
"""Below this many vectors exact search is fast enough and needs no training or tuning."""
PQ_MIN_VECTORS = 1_000_000
"""From this many vectors on, the lists of an IVF index are compressed with product quantisation."""
MIN_TRAIN_POINTS_PER_CENTROID = 39
"""FAISS warns below 39 training points per k-means centroid; the IVF list count is capped to respect it."""
PQ_CODEBOOK_SIZE = 256
"""Centroids per PQ sub-quantiser (8-bit codes)."""
MAX_PQ_M = 64
"""Most PQ sub-quantisers (bytes per code) chosen automatically: codes only pick candidates for exact re-ranking."""
HNSW_M = 32
"""Graph degree of the HNSW alternative."""
REFINE_MAX_K_FACTOR = 64
"""Largest re-ranking factor tried: up to ``64 * k`` PQ candidates are re-scored exactly."""
MAX_EF_SEARCH = 4096
"""Largest HNSW ``efSearch`` tried."""


@dataclass(frozen=True)
class IndexPlan:
    """An index type chosen for a collection, and why.

    Attributes:
        factory: FAISS index factory string.
        reason: one line: sizes, the rule that applied and the memory estimate.
        memory_mb: estimated RAM of the filled index.
        nlist: IVF list count, or None for indexes without lists.
    """

    factory: str
    reason: str
    memory_mb: float
    nlist: int | None


class SearchTuning(NamedTuple):
    """The outcome of :func:`tune_search`.

    Attributes:
        param: the tuned search parameter (``nprobe``, ``efSearch`` or ``k_factor_rf``), None for exact ``Flat``.
        value: its chosen value, already set on the index.
        recall_at_k: recall@k measured at that value (and at the re-ranking factor left on the index, if any).
    """

    param: str | None
    value: int | None
    recall_at_k: float


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as float32 ``[n, d]`` with unit L2 norm per row; all-zero rows stay zero.

    Returns the input itself (no copy) when it already is C-contiguous float32 with unit rows.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array [n, d]; got shape {x.shape}")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    nonzero = norms > 0
    if np.allclose(norms[nonzero], 1.0, atol=1e-4):
        return x
    return x / np.where(nonzero, norms, 1.0)[:, None]


def _power_of_two_at_most(value: float) -> int:
    return 2 ** int(math.floor(math.log2(max(value, 1.0))))


def ivf_list_count(n_vectors: int, train_points: int) -> int:
    """IVF list count: ``4·sqrt(n)`` rounded to the nearest power of two, then halved until every list has at
    least 39 training points."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(n_vectors), 1.0)))
    return max(1, min(nlist, _power_of_two_at_most(train_points / MIN_TRAIN_POINTS_PER_CENTROID)))


def pq_subquantizers(dim: int) -> int:
    """PQ code length in bytes: the largest divisor of ``dim`` not above ``min(64, dim / 8)``."""
    cap = max(1, min(MAX_PQ_M, dim // 8))
    return max(m for m in range(1, cap + 1) if dim % m == 0)


def plan_index(
    n_vectors: int,
    dim: int,
    memory_budget_mb: float | None = None,
    *,
    train_sample: int = 100_000,
    opq: bool = False,
) -> IndexPlan:
    """Choose an index type for ``n_vectors`` vectors of width ``dim``; see :func:`choose_index_factory`."""
    if n_vectors < 1 or dim < 1:
        raise ValueError(f"need at least one vector of width >= 1; got n_vectors={n_vectors}, dim={dim}")
    mb = 1 / 2**20
    train_points = min(train_sample, n_vectors)
    nlist = ivf_list_count(n_vectors, train_points)
    ideal_nlist = ivf_list_count(n_vectors, n_vectors * MIN_TRAIN_POINTS_PER_CENTROID)
    m = pq_subquantizers(dim)
    flat_mb = n_vectors * dim * 4 * mb
    ivf_flat_mb = (n_vectors * (dim * 4 + 8) + nlist * dim * 4) * mb  # vectors + list ids + centroids
    hnsw_mb = n_vectors * (dim * 4 + 2 * HNSW_M * 4 + 16) * mb  # vectors + level-0 links (+ upper levels)
    # codes + list ids + centroids + PQ codebooks + the float32 copy that the exact re-ranking reads
    ivf_pq_mb = (n_vectors * (m + 8) + nlist * dim * 4 + PQ_CODEBOOK_SIZE * dim * 4) * mb + flat_mb

    def fits(size_mb: float) -> bool:
        return memory_budget_mb is None or size_mb <= memory_budget_mb

    budget = "no memory budget" if memory_budget_mb is None else f"budget {memory_budget_mb:,.0f} MB"
    head = f"n={n_vectors:,}, dim={dim}, {budget}"
    if n_vectors < FLAT_MAX_VECTORS and fits(flat_mb):
        return IndexPlan("Flat", f"{head}: fewer than {FLAT_MAX_VECTORS:,} vectors, exact search; "
                                 f"estimated {flat_mb:,.1f} MB", flat_mb, None)
    if n_vectors < PQ_MIN_VECTORS and fits(ivf_flat_mb):
        if nlist * 4 <= ideal_nlist and fits(hnsw_mb):
            return IndexPlan(f"HNSW{HNSW_M}", f"{head}: {train_points:,} training vectors allow only {nlist} IVF "
                                              f"lists of the {ideal_nlist} this size wants; HNSW needs no training; "
                                              f"estimated {hnsw_mb:,.1f} MB", hnsw_mb, None)
        return IndexPlan(f"IVF{nlist},Flat", f"{head}: mid-size, {nlist} lists of ~{n_vectors // nlist} vectors; "
                                             f"estimated {ivf_flat_mb:,.1f} MB", ivf_flat_mb, nlist)
    if train_points < MIN_TRAIN_POINTS_PER_CENTROID * PQ_CODEBOOK_SIZE:
        logger.warning("%s: the Flat index (%.1f MB) is over budget, but %d vectors are too few to train a PQ "
                       "codebook (%d needed); using Flat anyway", head, flat_mb, train_points,
                       MIN_TRAIN_POINTS_PER_CENTROID * PQ_CODEBOOK_SIZE)
        return IndexPlan("Flat", f"{head}: over budget, too few vectors for PQ; estimated {flat_mb:,.1f} MB",
                         flat_mb, None)
    prefix = f"OPQ{m}," if opq else ""
    why = "large collection" if n_vectors >= PQ_MIN_VECTORS else f"IVF-Flat ({ivf_flat_mb:,.1f} MB) over budget"
    if not fits(ivf_pq_mb):
        logger.warning("%s: IVF%d,PQ%d with exact re-ranking needs ~%.1f MB, over the budget: the re-ranking keeps "
                       "the float32 vectors (%.1f MB) in memory; raise memory_budget_mb or index fewer vectors",
                       head, nlist, m, ivf_pq_mb, flat_mb)
    return IndexPlan(f"{prefix}IVF{nlist},PQ{m},RFlat",
                     f"{head}: {why}; {m}-byte PQ codes in {nlist} lists, re-ranked exactly; "
                     f"estimated {ivf_pq_mb:,.1f} MB (of which {flat_mb:,.1f} MB float32 for re-ranking)",
                     ivf_pq_mb, nlist)


def choose_index_factory(
    n_vectors: int,
    dim: int,
    memory_budget_mb: float | None = None,
    *,
    train_sample: int = 100_000,
    opq: bool = False,
) -> str:
    """A FAISS index factory string for ``n_vectors`` L2-normalised vectors of width ``dim``, searched by inner product.

    The rules, in order (autofaiss's, with exact re-ranking added to every PQ index):

    1. Fewer than ``FLAT_MAX_VECTORS`` (20,000) vectors and the float32 vectors (``4·n·dim`` bytes) fit the
       budget: ``Flat``, exact search.
    2. Fewer than ``PQ_MIN_VECTORS`` (1,000,000) vectors and an IVF-Flat index fits the budget:
       ``IVF{nlist},Flat`` with ``nlist`` = ``4·sqrt(n)`` rounded to a power of two and halved until each list
       has at least 39 of the ``min(train_sample, n)`` training vectors. When that cap leaves at most a quarter
       of the lists the size wants (a training sample too small for fine lists, where IVF searches poorly)
       and HNSW's ``4·dim + 272`` bytes per vector fit the budget: ``HNSW32`` instead, which needs no training.
    3. Otherwise (large collections, or IVF-Flat over the budget): ``IVF{nlist},PQ{m},RFlat``, ``m``-byte codes
       with ``m`` the largest divisor of ``dim`` not above ``min(64, dim/8)``, prefixed by ``OPQ{m},`` when
       ``opq``. The ``RFlat`` suffix re-scores the best ``k_factor_rf · k`` PQ candidates with the exact
       vectors: on 200k×512 clustered vectors IVF1024,PQ64 alone plateaus at recall@10 0.27–0.33. The
       re-ranking keeps the float32 vectors in RAM, so this index is never smaller than ``Flat``: it saves search
       time, not memory, and a warning says so when it exceeds the budget. Collections with fewer than
       ``39·256`` training vectors cannot train a PQ codebook and stay ``Flat``, with a warning.

    Args:
        n_vectors: collection size.
        dim: vector width.
        memory_budget_mb: RAM the index may use, or None for no limit.
        train_sample: most vectors :func:`build_index` trains on; caps the IVF list count.
        opq: rotate vectors with OPQ before product quantisation (slower training, somewhat better codes).

    Returns:
        The factory string, e.g. ``"Flat"``, ``"IVF1024,Flat"``, ``"IVF2048,PQ32,RFlat"``.
    """
    return plan_index(n_vectors, dim, memory_budget_mb, train_sample=train_sample, opq=opq).factory


def _unwrap_index(index: faiss.Index | IndexBundle) -> tuple[faiss.Index, np.ndarray | None]:
    if isinstance(index, IndexBundle):
        return index.index, index.ids
    return index, None


def search_batched(
    index: faiss.Index | IndexBundle,
    queries: np.ndarray,
    k: int = 10,
    batch_size: int = 20_000,
    *,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar indexed vectors for each query, searching ``batch_size`` queries at a time.

    Queries are L2-normalised first, so scores are cosine similarities against an index from
    :func:`build_index`. The index may be a CPU index or one replicated to GPUs by
    :func:`~multimodal_suite.common.faiss_index.to_search_device`; on GPUs FAISS allows ``k`` up to 2048 and an
    out-of-memory batch is retried at half the size.

    Args:
        index: an :class:`~multimodal_suite.common.faiss_index.IndexBundle` (rows are mapped to its ``ids``) or a
            bare FAISS index (row numbers are returned).
        queries: float ``[q, d]``.
        k: neighbours per query; may exceed the index size.
        batch_size: queries per FAISS call (the ``batch_faiss`` setting).
        progress: progress bar label, or None for no bar.

    Returns:
        ``(scores, ids)``: float32 ``[q, k]`` best first, and int64 ``[q, k]`` external ids. When fewer than ``k``
        neighbours exist (``k`` > ``ntotal``) the missing ones have id -1 and score ``-inf``; FAISS itself pads
        with row -1 and score ``-3.4e38``, replaced so that padding cannot pass for a similarity.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    faiss_index, ids = _unwrap_index(index)
    xq = normalize_rows(queries)
    if xq.shape[1] != faiss_index.d:
        raise ValueError(f"queries have width {xq.shape[1]}, the index {faiss_index.d}")
    scores = np.empty((len(xq), k), dtype=np.float32)
    rows = np.empty((len(xq), k), dtype=np.int64)
    bar = tqdm(total=len(xq), desc=progress, unit="query", disable=progress is None, leave=False)
    started = time.perf_counter()

    def search(batch: range) -> np.ndarray:
        batch_scores, batch_rows = faiss_index.search(xq[batch.start : batch.stop], k)
        # written here so a batch that runs out of memory and is retried smaller leaves nothing half-done
        scores[batch.start : batch.stop] = batch_scores
        return batch_rows

    for batch, batch_rows in DynamicBatcher(batch_size).iter_batches(range(len(xq)), search):
        rows[batch.start : batch.stop] = batch_rows
        bar.update(len(batch))
    bar.close()
    missing = rows < 0
    scores[missing] = -np.inf
    if progress is not None:
        seconds = time.perf_counter() - started
        logger.info("%s: %d queries, k=%d in %.2f s (%.0f queries/s)", progress, len(xq), k, seconds,
                    len(xq) / max(seconds, 1e-9))
    if ids is None:
        return scores, rows
    return scores, np.where(missing, -1, ids[np.where(missing, 0, rows)])


def _drop_rows(found: np.ndarray, own_rows: np.ndarray | None, k: int) -> np.ndarray:
    """The first ``k`` results per query that are not the query's own row (leave-one-out)."""
    if own_rows is None:
        return found[:, :k]
    keep_first = np.argsort(found == own_rows[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(found, keep_first, axis=1)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact neighbours (``truth``, -1 = none) that ``found`` contains: k-recall@k."""
    valid = truth >= 0
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1) & valid
    return float(hits.sum() / max(valid.sum(), 1))


def _smallest_passing(
    recall_at: Callable[[int], float], low: int, high: int, target: float
) -> tuple[int, float, bool]:
    """Smallest value in ``[low, high]`` with ``recall_at(value) >= target``, found by doubling from ``low`` and then
    binary search (recall is taken as non-decreasing in the value).

    Returns ``(value, recall, reached)``; when no value reaches the target, the value with the best recall.
    """
    measured: dict[int, float] = {}

    def measure(value: int) -> float:
        if value not in measured:
            measured[value] = recall_at(value)
        return measured[value]

    failing, value = low - 1, low
    while measure(value) < target:
        if value >= high:
            best = max(measured, key=lambda v: (measured[v], -v))
            return best, measured[best], False
        failing, value = value, min(value * 2, high)
    passing = value
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if measure(middle) >= target:
            passing = middle
        else:
            failing = middle
    return passing, measured[passing], True


def _primary_search_param(index: faiss.Index, k: int) -> tuple[str, int, int] | None:
    """``(name, smallest, largest)`` of the parameter trading speed for recall, or None for exhaustive search."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return "nprobe", 1, int(ivf.nlist)
    if "efSearch" in current_search_params(index):
        return "efSearch", k, max(k, min(int(index.ntotal), MAX_EF_SEARCH))
    return None


def refine_k_factor(index: faiss.Index) -> int | None:
    """The re-ranking factor of an ``IndexRefine`` (``RFlat``) index, None for other indexes."""
    inner = faiss.downcast_index(index)
    return int(inner.k_factor) if isinstance(inner, faiss.IndexRefine) else None


def search_params(index: faiss.Index) -> dict[str, int]:
    """Search-time parameters set on ``index``: ``nprobe``/``efSearch`` and the re-ranking ``k_factor_rf``."""
    params = current_search_params(index)
    k_factor = refine_k_factor(index)
    if k_factor is not None:
        params["k_factor_rf"] = k_factor
    return params


def tune_search(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    target_recall: float = 0.95,
    *,
    query_rows: np.ndarray | None = None,
    batch_size: int = 20_000,
) -> SearchTuning:
    """Set the cheapest search parameter whose recall@k against exact search reaches ``target_recall``.

    Exact neighbours come from brute-force inner product over ``vectors`` (the computation of ``IndexFlatIP``);
    recall@k is the share of them the index returns in its top ``k``. The parameter is ``nprobe`` for IVF
    indexes (1 … nlist) and ``efSearch`` for HNSW (k … 4096), found by doubling and then binary search, so the
    value returned reaches the target and the one below it does not. For ``RFlat`` re-ranked indexes ``nprobe``
    is tuned with ``k_factor_rf`` at 64, then the smallest ``k_factor_rf`` keeping the target at that ``nprobe``
    is left on the index (read it with :func:`refine_k_factor`). When the target is never reached, the value with
    the best measured recall is set, returned with that recall, and a warning is logged.

    Args:
        index: a CPU index filled with ``vectors`` (normalised as by :func:`build_index`).
        vectors: float ``[n, d]``, the indexed vectors in row order.
        queries: float ``[q, d]``; a sample of ``vectors`` stands in for real queries.
        k: neighbours per query.
        target_recall: recall@k to reach, in (0, 1].
        query_rows: when the queries are rows of ``vectors``, those row numbers ``[q]``: each query's own row is
            left out of both result lists, so recall is measured as for a query not in the index.
        batch_size: queries per FAISS call.

    Returns:
        ``(param, value, recall_at_k)``; ``(None, None, recall)`` for indexes without a parameter (``Flat``).
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1]; got {target_recall}")
    xb = normalize_rows(vectors)
    xq = normalize_rows(queries)
    if query_rows is not None:
        query_rows = np.asarray(query_rows, dtype=np.int64)
        if query_rows.shape != (len(xq),):
            raise ValueError(f"query_rows must hold one row number per query; got shape {query_rows.shape}")
    extra = 0 if query_rows is None else 1
    _, truth = faiss.knn(xq, xb, k + extra, metric=faiss.METRIC_INNER_PRODUCT)
    truth = _drop_rows(truth, query_rows, k)

    def measure() -> float:
        _, found = search_batched(index, xq, k + extra, batch_size)
        return _recall(_drop_rows(found, query_rows, k), truth)

    def recall_with(name: str) -> Callable[[int], float]:
        def recall_at(value: int) -> float:
            set_search_param(index, name, value)
            return measure()

        return recall_at

    primary = _primary_search_param(index, k)
    refined = refine_k_factor(index) is not None
    if primary is None and not refined:
        return SearchTuning(None, None, measure())
    if refined:
        set_search_param(index, "k_factor_rf", REFINE_MAX_K_FACTOR)
    name, value, recall, reached = None, None, float("nan"), True
    if primary is not None:
        name, low, high = primary
        value, recall, reached = _smallest_passing(recall_with(name), low, high, target_recall)
        set_search_param(index, name, value)
    if refined and reached:
        # fewest exact re-scorings that keep the target at this nprobe/efSearch
        k_factor, recall, reached = _smallest_passing(recall_with("k_factor_rf"), 1, REFINE_MAX_K_FACTOR,
                                                      target_recall)
        set_search_param(index, "k_factor_rf", k_factor)
        if primary is None:
            name, value = "k_factor_rf", k_factor
    if not reached:
        logger.warning("%s: recall@%d never reaches %.3f; the best measured is %.4f at %s, which is set",
                       type(faiss.downcast_index(index)).__name__, k, target_recall, recall,
                       ", ".join(f"{key}={val}" for key, val in search_params(index).items()))
    return SearchTuning(name, value, recall)


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray | None,
    factory: str = "auto",
    *,
    train_sample: int = 100_000,
    seed: int = 0,
    memory_budget_mb: float | None = None,
    k: int = 10,
    target_recall: float = 0.95,
    held_out_queries: int = 1000,
    batch_size: int = 20_000,
    progress: str | None = None,
) -> IndexBundle:
    """Build an inner-product index over the L2-normalised ``vectors`` and tune it to ``target_recall``.

    The vectors are normalised here (the caller's array is not changed), so scores are cosine similarities. With
    ``factory="auto"`` :func:`choose_index_factory` picks the index; any FAISS factory string overrides it. The
    index trains on ``train_sample`` vectors drawn with ``seed``, receives every vector in batches of
    ``batch_size``, and :func:`tune_search` sets its search parameter on ``held_out_queries`` vectors drawn with
    ``seed``, each measured leave-one-out (its own row excluded).

    Args:
        vectors: float ``[n, d]``.
        ids: int ``[n]`` external id of each vector, or None for row numbers.
        factory: ``"auto"`` or a FAISS index factory string such as ``"IVF1024,Flat"``.
        train_sample: most vectors to train on.
        seed: seed of the training sample and of the held-out queries.
        memory_budget_mb: RAM the index may use (for ``"auto"``), or None.
        k: neighbours per query that recall is measured on.
        target_recall: recall@k the search parameter must reach.
        held_out_queries: queries to measure recall on (at most ``n``).
        batch_size: vectors per ``add`` and queries per search.
        progress: progress bar label for adding vectors, or None.

    Returns:
        An :class:`~multimodal_suite.common.faiss_index.IndexBundle` whose ``info`` holds ``factory``,
        ``chosen_by`` (``auto``/``params``), ``metric`` (``inner_product``), ``normalized`` (True), ``dim``,
        ``ntotal``, ``nlist`` (None without lists), ``search_param`` and its value under its own name (``nprobe``,
        ``efSearch``; ``k_factor_rf`` too when re-ranked), ``k``, ``target_recall``, ``recall_at_k`` (measured),
        ``recall_queries``, ``train_sample`` (vectors trained on, 0 when untrained), ``seed``, ``build_seconds``
        (train + add), ``tune_seconds``, and for ``auto`` also ``reason``, ``memory_mb_estimate`` and
        ``memory_budget_mb``.
    """
    started = time.perf_counter()
    x = normalize_rows(vectors)
    n, dim = x.shape
    if n < 1:
        raise ValueError("cannot build an index over zero vectors")
    if held_out_queries < 1:
        raise ValueError(f"held_out_queries must be >= 1; got {held_out_queries}")
    if ids is not None and len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors; need one id per vector")
    info: dict[str, Any] = {}
    if factory == "auto":
        plan = plan_index(n, dim, memory_budget_mb, train_sample=train_sample)
        factory = plan.factory
        info.update(chosen_by="auto", reason=plan.reason, memory_mb_estimate=round(plan.memory_mb, 1),
                    memory_budget_mb=memory_budget_mb)
        logger.info("FAISS index %s chosen: %s", factory, plan.reason)
    else:
        info["chosen_by"] = "params"
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"FAISS cannot build index factory {factory!r} for dim {dim} ({exc}); fix the factory "
                         f"string or use factory: auto") from exc

    rng = np.random.default_rng(seed)
    trained_on = 0
    if not index.is_trained:
        train_rows = np.sort(rng.choice(n, size=min(train_sample, n), replace=False))
        index.train(x[train_rows])
        trained_on = len(train_rows)
    bar = tqdm(total=n, desc=progress, unit="vector", disable=progress is None, leave=False)
    for start in range(0, n, batch_size):
        index.add(x[start : start + batch_size])
        bar.update(min(batch_size, n - start))
    bar.close()
    build_seconds = time.perf_counter() - started
    bundle = IndexBundle(index, ids=ids)

    tune_started = time.perf_counter()
    query_rows = np.sort(np.random.default_rng([seed, 1]).choice(n, size=min(held_out_queries, n), replace=False))
    tuning = tune_search(index, x, x[query_rows], k, target_recall, query_rows=query_rows, batch_size=batch_size)
    tune_seconds = time.perf_counter() - tune_started

    ivf = faiss.try_extract_index_ivf(index)
    info.update(
        factory=factory,
        metric="inner_product",
        normalized=True,
        dim=dim,
        ntotal=int(index.ntotal),
        nlist=None if ivf is None else int(ivf.nlist),
        search_param=tuning.param,
        **search_params(index),
        k=k,
        target_recall=target_recall,
        recall_at_k=round(tuning.recall_at_k, 4),
        recall_queries=len(query_rows),
        train_sample=trained_on,
        seed=seed,
        build_seconds=round(build_seconds, 3),
        tune_seconds=round(tune_seconds, 3),
    )
    bundle.info = info
    params = ", ".join(f"{key}={val}" for key, val in search_params(index).items()) or "exact"
    logger.info("FAISS %s over %d vectors of dim %d built in %.1f s (%.0f vectors/s); %s gives recall@%d %.4f "
                "(target %.2f, %d held-out queries)", factory, n, dim, build_seconds, n / max(build_seconds, 1e-9),
                params, k, tuning.recall_at_k, target_recall, len(query_rows))
    return bundle
