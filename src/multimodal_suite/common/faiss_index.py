"""A FAISS index with its description and id mapping, and moving indexes between CPU and GPUs.

FAISS builds without GPU support (``faiss-cpu``) run everything here on the CPU unchanged; with ``faiss-gpu``
and visible GPUs, :func:`to_search_device` replicates the index to every GPU for search.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

METRIC_NAMES: dict[int, str] = {
    faiss.METRIC_INNER_PRODUCT: "inner_product",
    faiss.METRIC_L2: "l2",
}
SEARCH_PARAMS = ("nprobe", "efSearch")
"""Info keys that are search-time parameters, restored on load through ``faiss.ParameterSpace``."""


@dataclass
class IndexBundle:
    """An index, what it is, and which external id each of its rows stands for.

    Attributes:
        index: the FAISS index (CPU or GPU).
        info: description stored beside the index: ``factory`` (index factory string), ``metric``
            (``inner_product``/``l2``), ``dim``, ``ntotal``, search parameters (``nprobe``, ``efSearch``),
            ``recall_at_k`` measured against exact search with ``k``, and anything else worth keeping.
        ids: int64 ``[ntotal]``, the external id of each index row; None means row number = id.
    """

    index: faiss.Index
    info: dict[str, Any] = field(default_factory=dict)
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ids is not None:
            ids = np.asarray(self.ids)
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"ids must be a 1-D integer array; got shape {ids.shape}, dtype {ids.dtype}")
            if len(ids) != self.index.ntotal:
                raise ValueError(f"{len(ids)} ids for an index of {self.index.ntotal} vectors; need one per vector")
            self.ids = ids.astype(np.int64, copy=False)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        """Vector width."""
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` nearest neighbours of each query: (scores ``[q, k]`` float32, external ids ``[q, k]`` int64).

        Missing neighbours (fewer than ``k`` found) have id -1.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self.index.search(queries, k)
        if self.ids is None:
            return scores, rows
        return scores, np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1)


def describe_index(index: faiss.Index) -> dict[str, Any]:
    """Facts read off the index itself: ``dim``, ``ntotal``, ``metric``, ``is_trained``."""
    return {
        "dim": int(index.d),
        "ntotal": int(index.ntotal),
        "metric": METRIC_NAMES.get(int(index.metric_type), str(int(index.metric_type))),
        "is_trained": bool(index.is_trained),
    }


def gpu_support() -> bool:
    """Whether this faiss build can use GPUs and sees at least one."""
    return hasattr(faiss, "index_cpu_to_all_gpus") and hasattr(faiss, "StandardGpuResources") and (
        faiss.get_num_gpus() > 0
    )


def is_gpu_index(index: faiss.Index) -> bool:
    """Whether ``index`` lives on GPU(s), directly or as replicas/shards of GPU indexes."""
    gpu_index = getattr(faiss, "GpuIndex", None)
    if gpu_index is None:
        return False
    if isinstance(index, gpu_index):
        return True
    if isinstance(index, (faiss.IndexReplicas, faiss.IndexShards)) and index.count() > 0:
        return is_gpu_index(faiss.downcast_index(index.at(0)))
    return False


def to_search_device(index: faiss.Index, use_gpu: bool | str = "auto") -> faiss.Index:
    """Replicate ``index`` to every GPU for search, or return it unchanged on CPU.

    Args:
        index: a CPU index.
        use_gpu: ``"auto"`` uses GPUs when faiss has GPU support and sees some; ``True`` requires them;
            ``False`` keeps the CPU index.

    Raises:
        RuntimeError: ``use_gpu=True`` without a GPU-enabled faiss or without GPUs.
    """
    if isinstance(use_gpu, str):
        if use_gpu.lower() != "auto":
            raise ValueError(f"use_gpu must be True, False or 'auto'; got {use_gpu!r}")
        want = gpu_support()
    else:
        want = bool(use_gpu)
        if want and not gpu_support():
            raise RuntimeError(
                "use_gpu=True but faiss has no GPU support or sees no GPU; install faiss-gpu "
                "(pip install .[gpu]) or set use_gpu: auto"
            )
    if not want:
        logger.info("FAISS index (%d vectors) searches on CPU", index.ntotal)
        return index
    try:
        gpu_index = faiss.index_cpu_to_all_gpus(index)
    except RuntimeError as exc:
        if use_gpu is True:
            raise
        # some index types (HNSW, ...) have no GPU implementation; "auto" then means CPU
        logger.warning("FAISS index %s cannot move to GPU (%s); searching on CPU", type(index).__name__, exc)
        return index
    logger.info("FAISS index (%d vectors) replicated to %d GPU(s)", index.ntotal, faiss.get_num_gpus())
    return gpu_index


def to_cpu(index: faiss.Index) -> faiss.Index:
    """A CPU copy of a GPU index; a CPU index is returned as is."""
    if is_gpu_index(index):
        return faiss.index_gpu_to_cpu(index)
    return index


def current_search_params(index: faiss.Index) -> dict[str, int]:
    """Search parameters as currently set on ``index``: ``nprobe`` for IVF, ``efSearch`` for HNSW."""
    params: dict[str, int] = {}
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params["nprobe"] = int(ivf.nprobe)
    inner = faiss.downcast_index(index)
    while not hasattr(inner, "hnsw"):
        # wrappers hold the searched index in ``.index`` (IndexIDMap, IndexPreTransform) or ``.base_index``
        # (IndexRefine, the RFlat suffix)
        wrapped = getattr(inner, "base_index", None) or getattr(inner, "index", None)
        if wrapped is None:
            break
        inner = faiss.downcast_index(wrapped)
    if hasattr(inner, "hnsw"):
        params["efSearch"] = int(inner.hnsw.efSearch)
    return params


def set_search_param(index: faiss.Index, name: str, value: Any) -> None:
    """Set a search-time parameter such as ``nprobe`` or ``efSearch``, wherever it sits in ``index``.

    Raises:
        RuntimeError: from faiss when ``index`` has no such parameter.
    """
    space = faiss.GpuParameterSpace() if is_gpu_index(index) else faiss.ParameterSpace()
    space.set_index_parameter(index, name, float(value))
