"""Ray against in-process execution, measured side by side in one run on this machine.

1. Image embedding: ``encode_images`` (in-process, decode threads ahead of the model) against
   ``encode_images_ray`` (Ray Data actor pool) at the same batch size, on demo page images (200×300 JPEGs drawn
   by the demo_data pipeline) read from disk, with the demo SigLIP spec from ``conf/demo/parameters_pss.yml``.
   "images/s" is end to end as a node sees it: model load (in-process) or replica start-up (Ray Data) included;
   "1-batch s" is the time for a single batch (mostly those fixed costs), "after start-up/s" the rate beyond it.
   A local Ray is started once beforehand; its start-up is reported on its own line.
2. Pipeline: ``kedro run --env demo --pipeline pss`` under ``SequentialRunner`` and ``RayRunner`` (and with
   ``pss.precompute.engine: ray_data``), each in a fresh process in a scratch copy of the project (its own data
   and MLflow store). ``demo_data`` runs once; before each timed run both embedding shard directories are
   deleted, so every run computes all embeddings (no cache). "process s" is the whole command (Python start-up,
   imports, Ray start-up where used); "pipeline s" is what Kedro reports for the pipeline itself.

Usage::

    python benchmarks/bench_ray.py                 # 800 images, then the pipeline runs (a few minutes)
    python benchmarks/bench_ray.py --images 400 --skip-pipeline
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
import yaml

from multimodal_suite.common.comics.books import PageRef
from multimodal_suite.common.encoding import encode_images
from multimodal_suite.common.models import load_model
from multimodal_suite.common.ray import RayOptions, local_init_kwargs
from multimodal_suite.common.ray_encoding import encode_images_ray
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books

PROJECT = Path(__file__).resolve().parents[1]
PAGES_PER_BOOK = (20, 40)


def machine() -> str:
    total_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{platform.processor() or platform.machine()}, cpu_count={os.cpu_count()}, ram_gib={total_gib:.0f}, "
            f"gpu={gpu}, torch {torch.__version__} threads={torch.get_num_threads()}, ray {ray.__version__}, "
            f"python {platform.python_version()}")


@ray.remote(num_cpus=1)
def _task_torch_threads() -> int:
    import torch as task_torch

    return task_torch.get_num_threads()


def demo_spec() -> tuple[dict, int, int]:
    """The demo image model spec, batch size and decode workers as the demo environment resolves them."""
    demo = yaml.safe_load((PROJECT / "conf/demo/parameters_pss.yml").read_text())["pss"]["precompute"]
    return demo["image_model"], int(demo.get("batch_size", 32)), int(demo.get("decode_workers", 2))


def write_pages(count: int, root: Path) -> list[PageRef]:
    """``count`` demo page images written as book folders under ``root`` (no broken inputs)."""
    num_books = math.ceil(count / PAGES_PER_BOOK[0]) + 1
    files, _ = generate_comic_books({"seed": 3, "num_books": num_books, "min_pages": PAGES_PER_BOOK[0],
                                     "max_pages": PAGES_PER_BOOK[1], "long_book_pages": 0, "unpadded_books": 0,
                                     "bad_inputs": False})
    pages = []
    for name in sorted(name for name in files if name.endswith(".jpg"))[:count]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])
        book_id, stem = name[:-4].split("/")
        pages.append(PageRef(book_id, int(stem), str(path)))
    return pages


def _timed(run, loaders: list, repeats: int = 2) -> tuple[float, np.ndarray]:
    """Best wall time of ``repeats`` runs, and the embeddings."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        embeddings = run(loaders)
        best = min(best, time.perf_counter() - started)
    return best, embeddings


def bench_encoding(num_images: int, mixed_precision: bool) -> list[tuple[str, float, str]]:
    """End-to-end images/s of each engine, and what is left once fixed costs are taken out.

    Each engine runs on one batch (fixed costs: model load, replica start-up, plus that batch) and on all images,
    best of two each; the rate after start-up is (N - batch) / (t_all - t_one_batch), an estimate.
    """
    spec, batch_size, decode_workers = demo_spec()
    cpus = os.cpu_count() or 1
    settings = {"batch_size": batch_size, "decode_workers": decode_workers, "mixed_precision": mixed_precision,
                "device": "cpu"}
    engines = [(f"in-process ({torch.get_num_threads()} torch threads, {decode_workers} decode threads)",
                lambda loaders: encode_images(load_model(spec), loaders, batch_size=batch_size, device="cpu",
                                              mixed_precision=mixed_precision, num_workers=decode_workers,
                                              progress=None).embeddings)]
    for replicas, cpus_each in ([(1, float(cpus)), (cpus, 1.0)] if cpus > 1 else [(1, 1.0)]):
        engines.append((f"Ray Data {replicas} replica(s) x {cpus_each:g} CPU",
                        lambda loaders, r=replicas, c=cpus_each: encode_images_ray(
                            spec, loaders, options=RayOptions(num_replicas=r, num_cpus_per_replica=c),
                            **settings).embeddings))
    rows: list[tuple[str, float, float, float, str]] = []
    with tempfile.TemporaryDirectory() as scratch:
        pages = write_pages(num_images, Path(scratch))
        loaders = [page.read_image_bytes for page in pages]
        count = len(loaders)
        print(f"\n[1] image embedding: {count} demo pages (200x300 JPEG, on disk), batch_size={batch_size}, "
              f"mixed_precision={mixed_precision}, model: {spec['family']} {spec['config']}")
        # Imports and first-call set-up of the driver process are not part of either engine.
        engines[0][1](loaders[:batch_size])

        started = time.perf_counter()
        ray.init(address="local", **local_init_kwargs(RayOptions(num_cpus=cpus), log_to_driver=False))
        ray_start_s = time.perf_counter() - started
        task_threads = ray.get(_task_torch_threads.remote())
        engines[1][1](loaders[:batch_size])  # Ray Data's own first-use set-up is not part of any timing
        reference = None
        try:
            for name, run in engines:
                one_batch_s, _ = _timed(run, loaders[:batch_size])
                total_s, embeddings = _timed(run, loaders)
                reference = embeddings if reference is None else reference
                after_start = (count - batch_size) / max(total_s - one_batch_s, 1e-9)
                rows.append((name, count / total_s, one_batch_s, after_start,
                             f"max |diff| vs in-process {float(np.abs(embeddings - reference).max()):.1e}"))
        finally:
            ray.shutdown()
    print(f"local Ray start-up (once, before and outside every timing below): {ray_start_s:.1f} s; "
          f"torch threads in a Ray task with num_cpus=1: {task_threads}")
    base_total, base_after = rows[0][1], rows[0][3]
    print(f"{'engine':<48} {'images/s':>9} {'ratio':>6} {'1-batch s':>10} {'after start-up/s':>17} {'ratio':>6}")
    for name, total, one_batch_s, after_start, note in rows:
        print(f"{name:<48} {total:>9.1f} {total / base_total:>5.2f}x {one_batch_s:>10.2f} {after_start:>17.1f} "
              f"{after_start / base_after:>5.2f}x  {note}")
    return [(f"embed {count} images: {name}", count / total, "") for name, total, _, _, _ in rows]


def scratch_project(root: Path) -> Path:
    """A copy of the project's code and configuration with empty data layers and no tracking store."""
    skip = {".venv", ".git", "data", "mlruns", "mlartifacts", "mlflow.db", "__pycache__", ".ipynb_checkpoints",
            "benchmarks"}
    target = root / "project"
    shutil.copytree(PROJECT, target, ignore=lambda _, names: {name for name in names if name in skip})
    for layer in (PROJECT / "data").iterdir():
        if layer.is_dir():
            (target / "data" / layer.name).mkdir(parents=True)
    (target / "conf" / "local").mkdir(parents=True, exist_ok=True)
    return target


def _kedro_run(project: Path, args: list[str], log: Path) -> tuple[float, str]:
    """``kedro run`` in a fresh process in ``project`` → (wall s, its console output); fails loudly."""
    env = {**os.environ, "COLUMNS": "300"}  # one log record per line, so figures can be read back
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "kedro", "run", "--env", "demo", *args], cwd=project, env=env,
                             capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    output = process.stdout + process.stderr
    log.write_text(output)
    if process.returncode != 0:
        raise RuntimeError(f"kedro run {' '.join(args)} failed ({process.returncode}):\n{output[-4000:]}")
    return elapsed, output


def _figure(pattern: str, output: str) -> float:
    found = re.search(pattern, output)
    return float(found.group(1)) if found else math.nan


def bench_pipeline() -> list[tuple[str, float, str]]:
    cpus = os.cpu_count() or 1
    sequential = ["--runner", "SequentialRunner"]
    ray_runner = ["--runner", "multimodal_suite.runners.RayRunner", "--runner-params", "num_gpus=0"]
    ray_engine = ["--params", f"pss.precompute.engine=ray_data,pss.precompute.ray.num_replicas={cpus}"]
    variants = [
        ("SequentialRunner, engine in_process", sequential),
        ("RayRunner(num_gpus=0), engine in_process", ray_runner),
        (f"SequentialRunner, engine ray_data ({cpus} replicas x 1 CPU)", sequential + ray_engine),
        (f"RayRunner(num_gpus=0), engine ray_data ({cpus} replicas x 1 CPU)", ray_runner + ray_engine),
    ]
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        project = scratch_project(Path(scratch))
        demo_data_s, _ = _kedro_run(project, ["--pipeline", "demo_data"], Path(scratch) / "demo_data.log")
        pages = sum(1 for _ in (project / "data/01_raw/comic_books").rglob("*.jpg"))
        print(f"\n[2] kedro run --env demo --pipeline pss, each in a fresh process in a scratch copy of the project; "
              f"demo_data once ({demo_data_s:.0f} s, {pages} page images); both embedding shard directories deleted "
              f"before every run, so every run computes all embeddings", flush=True)
        for number, (name, args) in enumerate(variants):
            for shards in (project / "data/04_feature/pss").glob("page_*_embeddings"):
                shutil.rmtree(shards)
            wall_s, output = _kedro_run(project, ["--pipeline", "pss", *args], Path(scratch) / f"pss_{number}.log")
            pipeline_s = _figure(r"Pipeline execution completed successfully in ([\d.]+) sec", output)
            pages_per_s = _figure(r"Page images: \d+ computed \(([\d.]+) pages/s\)", output)
            rows.append((name, wall_s, pipeline_s, pages_per_s))
            print(f"  {name}: {wall_s:.1f} s", flush=True)
    base_wall, base_pipeline = rows[0][1], rows[0][2]
    print(f"{'runner and engine':<62} {'process s':>10} {'speed-up':>9} {'pipeline s':>11} {'speed-up':>9} "
          f"{'embed_page_images pages/s':>26}")
    for name, wall_s, pipeline_s, pages_per_s in rows:
        print(f"{name:<62} {wall_s:>10.1f} {base_wall / wall_s:>8.2f}x {pipeline_s:>11.1f} "
              f"{base_pipeline / pipeline_s:>8.2f}x {pages_per_s:>26.1f}")
    return [(f"pipeline pss: {name}", wall_s, "") for name, wall_s, _, _ in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=800, help="page images to embed in part 1")
    parser.add_argument("--no-mixed-precision", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--skip-pipeline", action="store_true", help="only part 1")
    parser.add_argument("--skip-encoding", action="store_true", help="only part 2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {machine()}")
    summary = []
    if not args.skip_encoding:
        summary += bench_encoding(args.images, mixed_precision=not args.no_mixed_precision)
    if not args.skip_pipeline:
        summary += bench_pipeline()
    print("\nsummary (wall seconds, lower is better)")
    for name, seconds, _ in summary:
        print(f"  {name:<100} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
