"""pss speed and memory, measured side by side in one run on this machine.

1. Cached classification end to end (read shards → assemble sequences → BookBERT forward → write predictions):
   ms/page for ordinary books (30–120 pages) and for long books (windowed past 512 pages), and the forward's
   achieved FLOP/s as a fraction of a torch.mm peak sampled alternately with the forward (medians of both), beside
   the fraction against a peak sampled once at start-up.
2. Precompute images, for the demo SigLIP and a mid-size SigLIP (base-patch16-224 widths, random weights), like
   for like: decode alone (full-size vs draft decode), the encoder alone on decoded pages (fp32 vs bf16 autocast),
   a one-page-at-a-time loop and the batched encoder with the same decode and precision, and the batched encoder
   with 1, 2 and 4 decode threads as a fraction of the encoder-only rate. Texts: one at a time vs batched.
3. Incremental precompute: a rerun with 1 % of OCR texts changed, and one with 1 % of page images changed, vs a full
   run.
4. Peak memory of image precompute with and without autocast (CPU: bf16 vs fp32 RSS; GPU: max_memory_allocated).

Usage: python benchmarks/bench_pss.py [--books 200] [--quick]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import interleaved_with_peak, machine_summary, matmul_peak_flops, timed  # noqa: E402

from multimodal_suite.common.device import autocast_dtype, cpu_supports_bf16  # noqa: E402
from multimodal_suite.common.embeddings import EmbeddingTable  # noqa: E402
from multimodal_suite.common.encoding import (  # noqa: E402
    embed_prepared,
    encode_images,
    encode_texts,
    prepare_image,
    token_lengths,
)
from multimodal_suite.common.images import decode_image, resize_for_model  # noqa: E402
from multimodal_suite.common.models import load_model  # noqa: E402
from multimodal_suite.datasets import ComicBookFolderDataset, EmbeddingShardDataset  # noqa: E402
from multimodal_suite.models.bookbert import BookBERTConfig, BookBERTMultimodal2, window_starts  # noqa: E402
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books  # noqa: E402
from multimodal_suite.pipelines.pss import nodes  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DEMO_IMAGE_MODEL = {"source": "config", "family": "siglip_vision", "seed": 0,
                    "config": {"image_size": 64, "patch_size": 16, "hidden_size": 96, "intermediate_size": 192,
                               "num_hidden_layers": 2, "num_attention_heads": 4}}
# google/siglip-base-patch16-224's widths with random weights: the model, not decode, dominates (as with so400m).
MID_IMAGE_MODEL = {"source": "config", "family": "siglip_vision", "seed": 0,
                   "config": {"image_size": 224, "patch_size": 16, "hidden_size": 768, "intermediate_size": 3072,
                              "num_hidden_layers": 12, "num_attention_heads": 12}}
TEXT_MODEL = {"source": "bundled", "name": "all-MiniLM-L6-v2"}
WINDOW, STRIDE = 512, 256


def bookbert_forward_flops(config: BookBERTConfig, lengths: list[int]) -> float:
    """Multiply-add FLOPs of the forward over books of these lengths, window by window as classification runs."""
    h, f = config.bert_input, config.ff_dim
    per_token = 2 * config.input_dim * h + config.num_layers * (2 * 4 * h * h + 2 * 2 * h * f)
    per_token += 2 * h * config.num_classes
    total = 0.0
    for length in lengths:
        for _ in window_starts(length, WINDOW, STRIDE):
            n = min(length, WINDOW)
            total += n * per_token + config.num_layers * 2 * 2 * n * n * h  # QK^T and AV
    return total


def bench_classification(books: int, long_books: int, long_pages: int, workdir: Path, start_peak: float,
                         repeats: int) -> list[dict[str, float]]:
    """Real-size BookBERT (768 wide, 4 layers) on real-size cached embeddings (SigLIP 1152 + Qwen3 1024)."""
    rng = np.random.default_rng(0)
    groups = {"books of 30-120 pages": rng.integers(30, 120, size=books).tolist(),
              f"books of {long_pages} pages (windowed)": [long_pages] * long_books}
    visual_dim, text_dim = 1152, 1024
    index_rows = []
    for tag, (group, lengths) in zip("sl", groups.items()):
        for b, n in enumerate(lengths):
            for p in range(n):
                index_rows.append({"group": group, "book_id": f"{tag}{b:05d}", "page_index": p,
                                   "image_key": f"i{tag}{b}_{p}", "text_key": f"t{tag}{b}_{p}"})
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
    params = {"window": WINDOW, "stride": STRIDE}
    results = []
    for group, lengths in groups.items():
        if not lengths:
            continue
        group_index = index[index["group"] == group].drop(columns="group")
        out: dict[str, float] = {}
        with timed(out, "end_to_end_s"):
            sequences = nodes.assemble_book_sequences(group_index, images.load(), texts.load())
            table, _ = nodes.classify_books(trained, sequences, params)
            table.to_parquet(workdir / "predictions.parquet")
        forward_s, peak = interleaved_with_peak(lambda s=sequences: nodes.classify_books(trained, s, params), repeats)
        pages, flops = len(group_index), bookbert_forward_flops(config, lengths)
        results.append({"group": group, "pages": pages, "ms_per_page": 1000 * out["end_to_end_s"] / pages,
                        "forward_ms_per_page": 1000 * forward_s / pages, "flops_per_s": flops / forward_s,
                        "peak": peak, "fraction": flops / forward_s / peak,
                        "fraction_start_peak": flops / forward_s / start_peak})
    return results


def _prepare_full(load, size: int) -> np.ndarray | str:
    """A page decoded at full size, then resized (what a loop without draft decoding does)."""
    try:
        return resize_for_model(decode_image(load()), size)
    except ValueError as error:
        return str(error)


def _rate(count: int, seconds: float) -> float:
    return count / max(seconds, 1e-9)


def bench_image_precompute(refs, spec: dict, batch_size: int, bf16_pages: int) -> dict[str, float]:
    """Images/s of each stage of image precompute with one model, like for like (see the module docstring)."""
    model = load_model(spec)
    size, cpu = model.image_size, torch.device("cpu")
    auto = autocast_dtype(cpu, "auto")
    loaders = [page.read_image_bytes for page in refs]
    n = len(loaders)
    out: dict[str, float] = {"pages": n, "auto_dtype": "fp32" if auto is None else "bf16"}
    with timed(out, "decode_full_s"):
        full = [_prepare_full(load, size) for load in loaders]
    with timed(out, "decode_draft_s"):
        prepared = [prepare_image(load, size) for load in loaders]
    arrays = [a for a in prepared if not isinstance(a, str)]
    out["decoded"] = len(arrays)
    out["draft_vs_full_max_pixel_diff"] = float(max(np.abs(a.astype(int) - b.astype(int)).max()
                                                    for a, b in zip(full, prepared) if not isinstance(a, str)))

    def encoder_only(images, dtype) -> None:
        for i in range(0, len(images), batch_size):
            embed_prepared(model, images[i:i + batch_size], cpu, dtype)

    encoder_only(arrays[:batch_size], None)  # first-call set-up is part of no figure
    with timed(out, "encoder_fp32_s"):
        encoder_only(arrays, None)
    probe = arrays[:bf16_pages]
    encoder_only(probe[:2], torch.bfloat16)
    with timed(out, "encoder_fp32_probe_s"):
        encoder_only(probe, None)
    with timed(out, "encoder_bf16_probe_s"):
        encoder_only(probe, torch.bfloat16)
    with timed(out, "naive_s"), torch.inference_mode():  # same draft decode, same (auto) precision, one at a time
        for load in loaders:
            array = prepare_image(load, size)
            if not isinstance(array, str):
                embed_prepared(model, [array], cpu, auto)
    for workers in (1, 2, 4):
        with timed(out, f"batched_{workers}_s"):
            encode_images(model, loaders, batch_size=batch_size, device="cpu", mixed_precision="auto",
                          num_workers=workers, progress=None)
    out.update(decode_full=_rate(n, out["decode_full_s"]), decode_draft=_rate(n, out["decode_draft_s"]),
               encoder=_rate(len(arrays), out["encoder_fp32_s"]),
               encoder_fp32_probe=_rate(len(probe), out["encoder_fp32_probe_s"]),
               encoder_bf16_probe=_rate(len(probe), out["encoder_bf16_probe_s"]), naive=_rate(n, out["naive_s"]),
               **{f"batched_{w}": _rate(n, out[f"batched_{w}_s"]) for w in (1, 2, 4)})
    out["best_workers"] = max((1, 2, 4), key=lambda w: out[f"batched_{w}"])
    out["batched"] = out[f"batched_{out['best_workers']}"]
    return out


def bench_text_precompute(refs) -> dict[str, float]:
    """Texts/s one at a time vs batched, same model (neither side autocasts)."""
    texts = [page.read_ocr()[0] for page in refs]
    model = load_model(TEXT_MODEL)
    encode_texts(model, texts[:8], batch_size=8, progress=None)  # warm-up
    out: dict[str, float] = {"texts": len(texts)}
    with timed(out, "naive_s"), torch.inference_mode():
        for text in texts:
            model.module.encode([text], show_progress_bar=False)
    with timed(out, "batched_s"):
        encode_texts(model, texts, batch_size=64, progress=None)
    out.update(naive=_rate(len(texts), out["naive_s"]), batched=_rate(len(texts), out["batched_s"]))
    # Dense FLOPs of the encoder layers (embedding lookups are not matmuls): how close batching already is to peak.
    weights = sum(p.numel() for name, p in model.module.named_parameters() if "embeddings" not in name)
    tokens = token_lengths(model, texts)
    out["mean_tokens"] = float(np.mean(tokens))
    out["batched_flops_per_s"] = 2 * weights * sum(tokens) / out["batched_s"]
    return out


def print_image_precompute(label: str, r: dict[str, float]) -> None:
    print(f"    {label}: {r['pages']:.0f} pages ({r['decoded']:.0f} decodable), auto precision here = "
          f"{r['auto_dtype']} (CPU bf16 instructions: {cpu_supports_bf16()})")
    print(f"      decode only, 1 thread : full size {r['decode_full']:.0f} -> draft {r['decode_draft']:.0f} pages/s "
          f"({r['decode_draft'] / r['decode_full']:.2f}x; max pixel diff after resize {r['draft_vs_full_max_pixel_diff']:.0f}/255)")
    print(f"      encoder only          : fp32 {r['encoder_fp32_probe']:.1f} vs bf16 autocast "
          f"{r['encoder_bf16_probe']:.1f} pages/s (bf16/fp32 {r['encoder_bf16_probe'] / r['encoder_fp32_probe']:.2f}x);"
          f" fp32 on all pages {r['encoder']:.1f} pages/s")
    print(f"      like for like (draft decode, {r['auto_dtype']}): one page at a time {r['naive']:.1f} -> batched "
          f"{r['batched']:.1f} pages/s = {r['batched'] / r['naive']:.2f}x (goal >= 3x)")
    shares = " | ".join(f"{w} thread(s) {r[f'batched_{w}']:.1f} pages/s = {100 * r[f'batched_{w}'] / r['encoder']:.0f} %"
                        for w in (1, 2, 4))
    print(f"      batched vs encoder only: {shares} of the encoder-only rate")
def _run_precompute(books, annotations, params, shard_dir: Path) -> int:
    """One precompute over ``books`` into shards under ``shard_dir`` → image embeddings computed."""
    index, _ = nodes.index_pages(books, annotations, params)
    images = EmbeddingShardDataset(filepath=str(shard_dir / "images"))
    texts = EmbeddingShardDataset(filepath=str(shard_dir / "texts"))
    computed = 0
    for table in nodes.embed_page_images(books, index, images.load(), params):
        computed += len(table.rows)
        images.save(table)
    for table in nodes.embed_page_texts(index, texts.load(), params):
        texts.save(table)
    return computed


def _changed_image(number: int) -> bytes:
    buffer = io.BytesIO()  # distinct bytes per changed page: equal bytes share one content key, computed once
    Image.new("RGB", (200, 300), (number % 256, (number // 256) % 256, 160)).save(buffer, format="JPEG")
    return buffer.getvalue()


def bench_incremental(root: Path, annotations: list, workdir: Path) -> dict[str, float]:
    """A full precompute, then reruns after changing 1 % of OCR files, then 1 % of page images."""
    params = {"book_source": "annotations", "image_model": DEMO_IMAGE_MODEL, "text_model": TEXT_MODEL,
              "batch_size": 64, "text_batch_size": 64, "part_size": 1024, "device": "cpu"}
    books = ComicBookFolderDataset(filepath=str(root)).load()
    out: dict[str, float] = {}
    with timed(out, "full_s"):
        _run_precompute(books, annotations, params, workdir)
    pages = [page for book in books.values() for page in book.pages]
    step = max(1, len(pages) // max(1, len(pages) // 100))
    changed = pages[::step][: max(1, len(pages) // 100)]
    for page in changed:  # 1 % of the OCR files get new text
        Path(page.ocr_path).write_text(json.dumps({"OCRResult": f"changed text for page {page.page_index}"}))
    with timed(out, "ocr_s"):
        _run_precompute(books, annotations, params, workdir)
    for number, page in enumerate(pages[step // 2::step][: len(changed)]):  # 1 % of the page images change
        Path(page.image_path).write_bytes(_changed_image(number))
    started = time.perf_counter()
    out["images_recomputed"] = _run_precompute(books, annotations, params, workdir)
    out.update(image_s=time.perf_counter() - started, pages=len(pages), changed=len(changed))
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
    parser.add_argument("--books", type=int, default=200, help="ordinary books for the classification benchmark")
    parser.add_argument("--long-books", type=int, default=4, help="long books for the classification benchmark")
    parser.add_argument("--long-pages", type=int, default=1200, help="pages of each long book")
    parser.add_argument("--precompute-pages", type=int, default=300, help="pages for the demo image model")
    parser.add_argument("--mid-pages", type=int, default=32, help="pages for the mid-size image model")
    parser.add_argument("--repeats", type=int, default=5, help="alternating forward / peak measurements")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.books, args.long_books, args.long_pages = 20, 1, 700
        args.precompute_pages, args.mid_pages, args.repeats = 40, 4, 2
    print(f"machine: {machine_summary()}")
    start_peak = matmul_peak_flops()
    print(f"torch.mm fp32 peak sampled once at start-up (1024^3, best of 20): {start_peak / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        print(f"\n[1] cached classification, BookBERT 768x4 on 1152+1024-d embeddings, window {WINDOW} stride {STRIDE}")
        for c in bench_classification(args.books, args.long_books, args.long_pages, tmp_path / "classify",
                                      start_peak, args.repeats):
            print(f"    {c['group']} ({c['pages']} pages): end to end {c['ms_per_page']:.3f} ms/page (goal <= 0.5); "
                  f"forward {c['forward_ms_per_page']:.3f} ms/page, {c['flops_per_s'] / 1e9:.1f} GFLOP/s = "
                  f"{100 * c['fraction']:.0f} % of the interleaved peak ({c['peak'] / 1e9:.1f} GFLOP/s, median of "
                  f"{args.repeats}), {100 * c['fraction_start_peak']:.0f} % of the start-up peak (goal >= 60 %)")

        files, annotations = generate_comic_books({"seed": 1, "num_books": 24 if not args.quick else 6,
                                                   "long_book_pages": 0})
        root = tmp_path / "books"
        ComicBookFolderDataset(filepath=str(root)).save(files)
        books = ComicBookFolderDataset(filepath=str(root)).load()
        refs = [page for book in books.values() for page in book.pages]
        print("\n[2] precompute, naive one page at a time vs batched, same model, decode and precision")
        tiny = bench_image_precompute(refs[:args.precompute_pages], DEMO_IMAGE_MODEL, 64, args.precompute_pages)
        print_image_precompute("images, demo SigLIP 96x2 @64", tiny)
        mid = bench_image_precompute(refs[:args.mid_pages], MID_IMAGE_MODEL, 16, min(args.mid_pages, 8))
        print_image_precompute("images, mid-size SigLIP 768x12 @224 (base-patch16-224 widths)", mid)
        t = bench_text_precompute(refs[:args.precompute_pages])
        print(f"    texts, MiniLM-L6 (bundled), {t['texts']:.0f} OCR texts: one at a time {t['naive']:.1f} -> batched "
              f"{t['batched']:.1f} texts/s = {t['batched'] / t['naive']:.2f}x; {t['mean_tokens']:.0f} tokens a text on "
              f"average, batched at {t['batched_flops_per_s'] / 1e9:.0f} GFLOP/s = "
              f"{100 * t['batched_flops_per_s'] / start_peak:.0f} % of the start-up mm peak (weight matmuls only)")
        both = (tiny["naive_s"] + t["naive_s"]) / (tiny[f"batched_{tiny['best_workers']}_s"] + t["batched_s"])
        print(f"    demo precompute (images + texts, {tiny['pages']:.0f} pages): batched {both:.2f}x one at a time")

        i = bench_incremental(root, annotations, tmp_path / "shards")
        print(f"\n[3] incremental precompute, {i['pages']} pages")
        print(f"    full {i['full_s']:.1f} s | {i['changed']} OCR files changed: rerun {i['ocr_s']:.2f} s = "
              f"{100 * i['ocr_s'] / i['full_s']:.1f} % | {i['changed']} page images changed: rerun "
              f"{i['image_s']:.2f} s = {100 * i['image_s'] / i['full_s']:.1f} %, {i['images_recomputed']} image "
              f"embeddings computed (goal <= 5 %)")
    m = bench_memory()
    unit = "GPU max_memory_allocated" if torch.cuda.is_available() else "CPU peak RSS above the loaded model"
    print(f"\n[4] precompute memory ({unit}), 64 images through SigLIP 384x6 @224")
    print(f"    fp32 {m['fp32_peak_mb']:.0f} MB | autocast {m['autocast_peak_mb']:.0f} MB | "
          f"ratio {m['autocast_over_fp32']:.2f}")


if __name__ == "__main__":
    main()
