"""pss speed and memory, measured side by side in one run on this machine.

1. Cached classification end to end (read shards → assemble sequences → BookBERT forward → write predictions):
   ms/page, and the forward's achieved FLOP/s as a fraction of a torch.mm peak measured in the same run.
2. Precompute: the batched pipeline (threaded decode, batched SigLIP, sorted text batches) vs a naive
   one-page-at-a-time loop with the same models.
3. Incremental precompute: a rerun with 1 % of pages changed vs a full run.
4. Peak memory of image precompute with and without autocast (CPU: bf16 vs fp32 RSS; GPU: max_memory_allocated).

Usage: python benchmarks/bench_pss.py [--books 200] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import machine_summary, matmul_peak_flops, timed  # noqa: E402

from multimodal_suite.common.embeddings import EmbeddingTable  # noqa: E402
from multimodal_suite.common.encoding import encode_images, encode_texts  # noqa: E402
from multimodal_suite.common.images import decode_image, resize_for_model, to_pixel_values  # noqa: E402
from multimodal_suite.common.models import load_model  # noqa: E402
from multimodal_suite.datasets import ComicBookFolderDataset, EmbeddingShardDataset  # noqa: E402
from multimodal_suite.models.bookbert import BookBERTConfig, BookBERTMultimodal2  # noqa: E402
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books  # noqa: E402
from multimodal_suite.pipelines.pss import nodes  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEMO_IMAGE_MODEL = {"source": "config", "family": "siglip_vision", "seed": 0,
                    "config": {"image_size": 64, "patch_size": 16, "hidden_size": 96, "intermediate_size": 192,
                               "num_hidden_layers": 2, "num_attention_heads": 4}}
TEXT_MODEL = {"source": "bundled", "name": "all-MiniLM-L6-v2"}


def bookbert_forward_flops(config: BookBERTConfig, lengths: list[int]) -> float:
    """Multiply-add FLOPs of the forward over books of these lengths (projection, attention, FFN, head)."""
    h, f = config.bert_input, config.ff_dim
    total = 0.0
    for n in lengths:
        per_token = 2 * config.input_dim * h + config.num_layers * (2 * 4 * h * h + 2 * 2 * h * f)
        per_token += 2 * h * config.num_classes
        attention = config.num_layers * 2 * 2 * n * n * h  # QK^T and AV
        total += n * per_token + attention
    return total


def bench_classification(books: int, workdir: Path, peak: float) -> dict[str, float]:
    """Real-size BookBERT (768 wide, 4 layers) on real-size cached embeddings (SigLIP 1152 + Qwen3 1024)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 120, size=books).tolist()
    visual_dim, text_dim = 1152, 1024
    index_rows = []
    for b, n in enumerate(lengths):
        for p in range(n):
            index_rows.append({"book_id": f"b{b:05d}", "page_index": p, "image_key": f"i{b}_{p}",
                               "text_key": f"t{b}_{p}"})
    index = pd.DataFrame(index_rows)
    images = EmbeddingShardDataset(filepath=str(workdir / "images"))
    texts = EmbeddingShardDataset(filepath=str(workdir / "texts"))
    images.save(EmbeddingTable(rng.standard_normal((len(index), visual_dim), dtype=np.float32),
                               index[["image_key", "book_id", "page_index"]].rename(columns={"image_key": "key"})
                               .assign(decode_error="")))
    texts.save(EmbeddingTable(rng.standard_normal((len(index), text_dim), dtype=np.float32),
                              index[["text_key", "book_id", "page_index"]].rename(columns={"text_key": "key"})))
    config = BookBERTConfig(text_dim=text_dim, visual_dim=visual_dim, dropout=0.0)
    model = BookBERTMultimodal2(config)
    trained = {"config": config.to_dict(), "state_dict": model.state_dict(), "metadata": {}}
    out = {}
    with timed(out, "end_to_end_s"):
        sequences = nodes.assemble_book_sequences(index, images.load(), texts.load())
        with timed(out, "forward_s"):
            table, _ = nodes.classify_books(trained, sequences, {"window": 512, "stride": 256})
        table.to_parquet(workdir / "predictions.parquet")
    pages = len(index)
    flops = bookbert_forward_flops(config, lengths)
    # A second, forward-only measurement without the surrounding I/O: the model's own efficiency.
    out.update(pages=pages, ms_per_page=1000 * out["end_to_end_s"] / pages,
               forward_ms_per_page=1000 * out["forward_s"] / pages,
               forward_flops_per_s=flops / out["forward_s"], forward_fraction_of_peak=flops / out["forward_s"] / peak)
    return out


def _naive_images(refs, model) -> None:
    """One page at a time: read, decode, resize, forward."""
    with torch.inference_mode():
        for page in refs:
            try:
                array = resize_for_model(decode_image(page.read_image_bytes()), model.image_size)
            except ValueError:
                continue
            model.module(pixel_values=to_pixel_values([array], model.image_mean, model.image_std)).pooler_output


def _naive_texts(texts, model) -> None:
    with torch.inference_mode():
        for text in texts:
            model.module.encode([text], show_progress_bar=False)


def bench_precompute(root: Path, max_pages: int) -> dict[str, float]:
    """Naive per-page loops vs the batched encoders, images and texts measured apart (same models)."""
    books = ComicBookFolderDataset(filepath=str(root)).load()
    refs = [page for book in books.values() for page in book.pages][:max_pages]
    texts = [page.read_ocr()[0] for page in refs]
    image_model, text_model = load_model(DEMO_IMAGE_MODEL), load_model(TEXT_MODEL)
    encode_images(image_model, [p.read_image_bytes for p in refs[:8]], batch_size=8, progress=None)  # warm-up
    encode_texts(text_model, texts[:8], batch_size=8, progress=None)
    out: dict[str, float] = {}
    with timed(out, "naive_images_s"):
        _naive_images(refs, image_model)
    with timed(out, "batched_images_s"):
        encode_images(image_model, [p.read_image_bytes for p in refs], batch_size=64, progress=None)
    with timed(out, "naive_texts_s"):
        _naive_texts(texts, text_model)
    with timed(out, "batched_texts_s"):
        encode_texts(text_model, texts, batch_size=64, progress=None)
    pages = len(refs)
    out.update(pages=pages, image_speedup=out["naive_images_s"] / out["batched_images_s"],
               text_speedup=out["naive_texts_s"] / out["batched_texts_s"],
               speedup=(out["naive_images_s"] + out["naive_texts_s"])
               / (out["batched_images_s"] + out["batched_texts_s"]))
    return out


def _run_precompute(books, annotations, params, shard_dir: Path) -> None:
    index, _ = nodes.index_pages(books, annotations, params)
    images = EmbeddingShardDataset(filepath=str(shard_dir / "images"))
    texts = EmbeddingShardDataset(filepath=str(shard_dir / "texts"))
    for table in nodes.embed_page_images(books, index, images.load(), params):
        images.save(table)
    for table in nodes.embed_page_texts(index, texts.load(), params):
        texts.save(table)


def bench_incremental(root: Path, annotations: list, workdir: Path) -> dict[str, float]:
    params = {"book_source": "annotations", "image_model": DEMO_IMAGE_MODEL, "text_model": TEXT_MODEL,
              "batch_size": 64, "text_batch_size": 64, "part_size": 1024, "device": "cpu"}
    books = ComicBookFolderDataset(filepath=str(root)).load()
    out: dict[str, float] = {}
    with timed(out, "full_s"):
        _run_precompute(books, annotations, params, workdir)
    pages = [page for book in books.values() for page in book.pages]
    changed = pages[:: max(1, len(pages) // max(1, len(pages) // 100))][: max(1, len(pages) // 100)]
    for page in changed:  # 1 % of the OCR files get new text
        Path(page.ocr_path).write_text(json.dumps({"OCRResult": f"changed text for page {page.page_index}"}))
    with timed(out, "incremental_s"):
        _run_precompute(books, annotations, params, workdir)
    out.update(pages=len(pages), changed=len(changed), incremental_fraction=out["incremental_s"] / out["full_s"])
    return out


MEMORY_PROBE = """
import resource, sys, torch
from multimodal_suite.common.encoding import encode_images
from multimodal_suite.common.models import load_model
import io
from PIL import Image
spec = {"source": "config", "family": "siglip_vision", "seed": 0, "config": {"image_size": 224, "patch_size": 16,
        "hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6, "num_attention_heads": 6}}
model = load_model(spec)
import psutil
baseline = psutil.Process().memory_info().rss / 2**20
buffer = io.BytesIO(); Image.new("RGB", (200, 300), (120, 30, 200)).save(buffer, format="JPEG"); data = buffer.getvalue()
mixed = sys.argv[1] == "1"
if torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()
encode_images(model, [lambda: data] * 64, batch_size=64, mixed_precision=mixed, progress=None)
# CPU: growth of the peak RSS over the loaded model, i.e. what the batch itself needed.
peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
print(peak)
"""


def bench_memory() -> dict[str, float]:
    """Peak memory of one 64-image batch through a mid-size SigLIP, in a fresh process per setting."""
    results = {}
    for name, flag in (("fp32", "0"), ("autocast", "1")):
        completed = subprocess.run([sys.executable, "-c", MEMORY_PROBE, flag], capture_output=True, text=True,
                                   check=True)
        results[f"{name}_peak_mb"] = float(completed.stdout.strip().splitlines()[-1])
    results["autocast_over_fp32"] = results["autocast_peak_mb"] / results["fp32_peak_mb"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=int, default=200, help="books for the classification benchmark")
    parser.add_argument("--precompute-pages", type=int, default=300, help="pages for naive vs batched")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.books, args.precompute_pages = 20, 40
    print(f"machine: {machine_summary()}")
    peak = matmul_peak_flops()
    print(f"torch.mm fp32 peak (1024^3, best of 20): {peak / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        c = bench_classification(args.books, tmp_path / "classify", peak)
        print(f"\n[1] cached classification, {c['pages']} pages, BookBERT 768x4 on 1152+1024-d embeddings")
        print(f"    end to end {c['ms_per_page']:.3f} ms/page (goal <= 0.5; seed claimed < 10)")
        print(f"    forward    {c['forward_ms_per_page']:.3f} ms/page, {c['forward_flops_per_s'] / 1e9:.1f} GFLOP/s "
              f"= {100 * c['forward_fraction_of_peak']:.0f} % of the torch.mm peak (goal >= 60 %)")

        files, annotations = generate_comic_books({"seed": 1, "num_books": 24 if not args.quick else 6,
                                                   "long_book_pages": 0})
        root = tmp_path / "books"
        ComicBookFolderDataset(filepath=str(root)).save(files)
        p = bench_precompute(root, args.precompute_pages)
        n = p["pages"]
        print(f"\n[2] precompute, {n} pages, demo SigLIP + MiniLM: naive one page at a time vs batched (goal >= 3x)")
        print(f"    images {n / p['naive_images_s']:.0f} -> {n / p['batched_images_s']:.0f} pages/s "
              f"({p['image_speedup']:.1f}x) | texts {n / p['naive_texts_s']:.1f} -> {n / p['batched_texts_s']:.1f} "
              f"pages/s ({p['text_speedup']:.1f}x) | both {p['speedup']:.1f}x")

        i = bench_incremental(root, annotations, tmp_path / "shards")
        print(f"\n[3] incremental precompute, {i['pages']} pages, {i['changed']} OCR files changed")
        print(f"    full {i['full_s']:.1f} s | rerun {i['incremental_s']:.2f} s | "
              f"{100 * i['incremental_fraction']:.1f} % of the full run (goal <= 5 %)")
    m = bench_memory()
    unit = "GPU max_memory_allocated" if torch.cuda.is_available() else "CPU peak RSS above the loaded model"
    print(f"\n[4] precompute memory ({unit}), 64 images through SigLIP 384x6 @224")
    print(f"    fp32 {m['fp32_peak_mb']:.0f} MB | autocast {m['autocast_peak_mb']:.0f} MB | "
          f"ratio {m['autocast_over_fp32']:.2f}")


if __name__ == "__main__":
    main()
