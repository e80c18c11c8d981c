"""Tagging retrieval speed and quality, measured side by side in one run on this machine.

1. faiss: the index ``build_index(factory="auto")`` chooses and tunes to recall@10 >= 0.95, against exact search
   (``IndexFlatIP``) over the same clustered, L2-normalised vectors: build time, queries/s of each on the same
   held-out queries (noisy copies of indexed vectors, themselves not indexed), their ratio, and recall@10 of the
   auto index against the exact neighbours at the tuned parameters.

2. embedding: the source step (read tar shards → segment → crop in memory → CLIP-embed) over the generated demo
   collection, in process and on a Ray Data actor pool of segmenter + CLIP replicas, at the same batch sizes and
   with the same demo models: samples/s and crops/s of each and their ratio. Ray's own start-up is timed apart;
   each engine runs twice and the faster run counts.

Usage: python benchmarks/bench_tagging.py [--vectors 1000000] [--dim 256] [--queries 2000] [--skip-faiss]
                                          [--shards 4] [--samples-per-shard 64] [--replicas 2] [--skip-embedding]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import machine_summary, timed  # noqa: E402

from multimodal_suite.common.vector_index import (  # noqa: E402
    build_index,
    normalize_rows,
    search_batched,
    search_params,
)

K = 10
TARGET_RECALL = 0.95
GENERATE_CHUNK = 100_000


def clustered_vectors(
    n: int, dim: int, clusters: int, seed: int, spread: tuple[float, float] = (0.5, 1.0), chunk: int = GENERATE_CHUNK
) -> np.ndarray:
    """``n`` L2-normalised float32 vectors from a mixture of ``clusters`` isotropic Gaussians around standard-normal
    centres, each cluster with its own noise scale drawn uniformly from ``spread``.

    Mixing tight and diffuse clusters keeps the data from being trivially separable (one probe finds everything)
    or uniformly hard. Rows are generated ``chunk`` at a time into one preallocated array, so the peak is the
    result plus one chunk, and come out normalised, which lets ``build_index`` index them without a copy.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    scales = rng.uniform(*spread, size=clusters).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        labels = rng.integers(clusters, size=stop - start)
        block = centers[labels]
        block += scales[labels, None] * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = normalize_rows(block)
    return out


def held_out_queries(vectors: np.ndarray, count: int, seed: int, noise: float = 0.25) -> np.ndarray:
    """Noisy copies of ``count`` random indexed vectors: near the collection, but never in it."""
    rng = np.random.default_rng([seed, 1])
    rows = rng.choice(len(vectors), size=count, replace=False)
    # per-dimension noise scaled to the unit-norm rows, so the copy stays close whatever the width
    jitter = noise / np.sqrt(vectors.shape[1])
    return normalize_rows(vectors[rows] + jitter * rng.standard_normal((count, vectors.shape[1]), dtype=np.float32))


def best_search_seconds(search: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, after one untimed warm-up on the same queries."""
    search()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        search()
        best = min(best, time.perf_counter() - started)
    return best


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top-k that ``found`` contains."""
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1)
    return float(hits.mean())


def bench_faiss(n: int, dim: int, queries: int, clusters: int, seed: int, repeats: int) -> dict[str, Any]:
    """Auto-chosen, tuned index vs exact Flat over the same vectors and queries."""
    out: dict[str, Any] = {}
    with timed(out, "generate_s"):
        vectors = clustered_vectors(n, dim, clusters, seed)
        xq = held_out_queries(vectors, queries, seed)

    with timed(out, "auto_build_s"):
        bundle = build_index(vectors, None, "auto", target_recall=TARGET_RECALL, k=K, seed=seed)
    with timed(out, "flat_build_s"):
        flat = faiss.IndexFlatIP(dim)
        flat.add(vectors)

    out["auto_search_s"] = best_search_seconds(lambda: search_batched(bundle, xq, K), repeats)
    out["flat_search_s"] = best_search_seconds(lambda: search_batched(flat, xq, K), repeats)
    _, found = search_batched(bundle, xq, K)
    _, truth = search_batched(flat, xq, K)

    info = bundle.info
    out.update(
        vectors=n, dim=dim, queries=queries, clusters=clusters,
        factory=info["factory"], reason=info.get("reason", ""), params=search_params(bundle.index),
        train_s=info["build_seconds"], tune_s=info["tune_seconds"], memory_mb=info.get("memory_mb_estimate"),
        tuned_recall=info["recall_at_k"],
        recall=recall_at_k(found, truth),
        auto_qps=queries / out["auto_search_s"], flat_qps=queries / out["flat_search_s"],
    )
    out["qps_ratio"] = out["auto_qps"] / out["flat_qps"]
    return out


def print_faiss(f: dict[str, Any]) -> None:
    """Part 1's figures, as returned by :func:`bench_faiss`."""
    params = ", ".join(f"{name}={value}" for name, value in f["params"].items()) or "exact"
    print(f"\n[1] faiss, {f['vectors']:,} x {f['dim']} clustered vectors ({f['clusters']:,} clusters), "
          f"{f['queries']:,} held-out queries, k={K}")
    print(f"    generated in {f['generate_s']:.1f} s")
    print(f"    auto chose {f['factory']} ({params}); estimated {f['memory_mb']:,.1f} MB")
    print(f"      {f['reason']}")
    print(f"    build  auto {f['auto_build_s']:.2f} s (train + add {f['train_s']:.2f} s, tune {f['tune_s']:.2f} s) | "
          f"Flat (add only) {f['flat_build_s']:.2f} s")
    print(f"    search auto {f['auto_qps']:,.0f} queries/s | Flat {f['flat_qps']:,.0f} queries/s | "
          f"auto/Flat {f['qps_ratio']:.1f}x")
    print(f"    recall@{K} of auto vs Flat: {f['recall']:.4f} on the held-out queries "
          f"({f['tuned_recall']:.4f} leave-one-out while tuning; target {TARGET_RECALL})")


def demo_tagging_params() -> dict[str, Any]:
    """The demo environment's tagging parameters (conf/base soft-merged with conf/demo)."""
    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf"
    base = yaml.safe_load((conf / "base" / "parameters_tagging.yml").read_text())["tagging"]
    demo = yaml.safe_load((conf / "demo" / "parameters_tagging.yml").read_text())["tagging"]
    for section, values in demo.items():
        base.setdefault(section, {}).update(values)
    return base


def bench_embedding(shards: int, samples_per_shard: int, replicas: int, cpus_per_replica: int) -> dict[str, Any]:
    """Source crops/s in process vs on a Ray Data actor pool, same models, batches and shards."""
    import tempfile

    import ray

    from multimodal_suite.common.ray import RayOptions
    from multimodal_suite.datasets import SampleFilesDataset, WebDatasetShardsDataset
    from multimodal_suite.pipelines.demo_data.nodes import generate_tagging_samples
    from multimodal_suite.pipelines.tagging.crops import CropEmbedder
    from multimodal_suite.pipelines.tagging.ray_source_crops import iter_source_tables_ray
    from multimodal_suite.pipelines.tagging.source_crops import iter_source_tables

    params = demo_tagging_params()
    segmenter, model = params["models"]["segmenter"], params["models"]["clip_model"]
    batch_images, batch_clips = params["batching"]["batch_images"], params["batching"]["batch_clips"]
    result: dict[str, Any] = {"shards": shards, "samples": shards * samples_per_shard, "replicas": replicas,
                              "cpus_per_replica": cpus_per_replica,
                              "batch_images": batch_images, "batch_clips": batch_clips}
    with tempfile.TemporaryDirectory() as scratch:
        source, tags, _, _ = generate_tagging_samples({"num_shards": shards, "samples_per_shard": samples_per_shard,
                                                       "bad_inputs": False, "images_per_folder": 1})
        SampleFilesDataset(filepath=f"{scratch}/source").save(source)
        SampleFilesDataset(filepath=f"{scratch}/tags").save(tags)
        view = WebDatasetShardsDataset(filepath=f"{scratch}/source", tags_dir=f"{scratch}/tags").load()

        def in_process(shards: list[str]) -> int:
            embedder = CropEmbedder(segmenter, model, batch_clips=batch_clips, device="cpu")
            return sum(len(table) for _, table in iter_source_tables(view, shards, embedder, batch_images))

        def on_ray(shards: list[str]) -> int:
            return sum(len(table) for _, table in iter_source_tables_ray(
                view, shards, segmenter, model, batch_images=batch_images, batch_clips=batch_clips,
                options=RayOptions(num_replicas=replicas, num_cpus_per_replica=cpus_per_replica), device="cpu"))

        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=512 * 2**20)
        result["ray_start_s"] = time.perf_counter() - started
        try:
            for name, run in (("in_process", in_process), ("ray_data", on_ray)):
                # one shard (fixed costs: model loads, replica start-up, plus that shard) and all shards,
                # best of two each; the rate after start-up is what the remaining shards ran at
                one = min(_timed_run(run, view.shards[:1]) for _ in range(2))
                every = min(_timed_run(run, view.shards) for _ in range(2))
                result[name] = {"seconds": every[0], "crops": every[1], "one_shard_s": one[0],
                                "one_shard_crops": one[1]}
        finally:
            ray.shutdown()
    return result


def _timed_run(run: Callable[[list[str]], int], shards: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    crops = run(shards)
    return time.perf_counter() - started, crops


def print_embedding(e: dict[str, Any]) -> None:
    print(f"\n[2] embedding: {e['samples']} source samples in {e['shards']} tar shards, demo models, "
          f"batch_images {e['batch_images']}, batch_clips {e['batch_clips']}; Ray start-up {e['ray_start_s']:.1f} s "
          f"(not counted)")
    base = e["in_process"]
    print(f"    {'engine':<34} {'1-shard s':>9} {'all s':>7} {'samples/s':>10} {'crops/s':>8} {'vs in-proc':>10} "
          f"{'crops/s after start-up':>23} {'vs in-proc':>10}")

    def after_startup(run: dict[str, Any]) -> float:
        return (run["crops"] - run["one_shard_crops"]) / max(run["seconds"] - run["one_shard_s"], 1e-9)

    for name, label in (("in_process", "in process"), ("ray_data", f"Ray Data, {e['replicas']} replica(s) x {e['cpus_per_replica']} CPU")):
        run = e[name]
        print(f"    {label:<34} {run['one_shard_s']:>9.1f} {run['seconds']:>7.1f} {e['samples'] / run['seconds']:>10.1f} "
              f"{run['crops'] / run['seconds']:>8.1f} {base['seconds'] / run['seconds']:>9.2f}x "
              f"{after_startup(run):>23.1f} {after_startup(run) / after_startup(base):>9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000, help="indexed vectors for the faiss part")
    parser.add_argument("--dim", type=int, default=256, help="vector width for the faiss part")
    parser.add_argument("--queries", type=int, default=2_000, help="held-out queries searched by both indexes")
    parser.add_argument("--clusters", type=int, default=2_000, help="Gaussian clusters the vectors are drawn from")
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per index (the fastest counts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-faiss", action="store_true", help="do not run part 1 (faiss)")
    parser.add_argument("--shards", type=int, default=4, help="source tar shards for the embedding part")
    parser.add_argument("--samples-per-shard", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=1, help="Ray actor pool size")
    parser.add_argument("--cpus-per-replica", type=int, default=2, help="CPUs (and torch threads) per replica")
    parser.add_argument("--skip-embedding", action="store_true", help="do not run part 2 (embedding)")
    args = parser.parse_args()
    if not 1 <= args.queries <= args.vectors:
        parser.error("--queries must be between 1 and --vectors: queries are noisy copies of distinct vectors")
    print(f"machine: {machine_summary()}, faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads)")

    if not args.skip_faiss:
        print_faiss(bench_faiss(args.vectors, args.dim, args.queries, args.clusters, args.seed, args.repeats))

    if not args.skip_embedding:
        print_embedding(bench_embedding(args.shards, args.samples_per_shard, args.replicas, args.cpus_per_replica))


if __name__ == "__main__":
    main()
