"""Shared benchmark utilities: what machine this is, a measured matmul peak, and a timer."""
from __future__ import annotations

import os
import platform
import time
from contextlib import contextmanager
import statistics
from typing import Callable, Iterator

import torch


def machine_summary() -> str:
    """One line naming the hardware and the software that matter for the figures."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {device}")


def matmul_peak_flops(size: int = 1024, dtype: torch.dtype = torch.float32, repeats: int = 20) -> float:
    """Achieved FLOP/s of a square ``torch.mm`` on this machine: the practical peak other figures are compared to."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


@contextmanager
def timed(results: dict[str, float], name: str) -> Iterator[None]:
    """Store the wall time of the block in ``results[name]`` (seconds)."""
    started = time.perf_counter()
    yield
    results[name] = time.perf_counter() - started


def interleaved_with_peak(work: Callable[[], object], repeats: int = 5) -> tuple[float, float]:
    """Median wall time of ``work`` and median matmul peak (FLOP/s), measured alternately ``repeats`` times.

    A peak sampled once at start-up says little on a machine whose load changes; sampled right around each
    repeat of the measured work, both medians describe the same conditions.
    """
    seconds, peaks = [], []
    for _ in range(repeats):
        peaks.append(matmul_peak_flops(repeats=5))
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), statistics.median(peaks)
