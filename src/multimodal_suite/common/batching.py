"""Dynamic batching: halve the batch on out-of-memory, retry the same items, grow back after successes.

Every item is processed exactly once and results come back in input order, whatever the OOM pattern.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def is_oom_error(error: BaseException) -> bool:
    """True for the out-of-memory errors torch raises on cuda, mps and cpu allocators."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, (RuntimeError, MemoryError)) and (
        "out of memory" in message or "can't allocate memory" in message or isinstance(error, MemoryError)
    )


def _free_accelerator_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()


@dataclass
class DynamicBatcher:
    """Runs ``fn`` over items in batches whose size adapts to memory pressure.

    Args:
        batch_size: starting (and maximum) batch size.
        min_batch_size: below this an OOM is re-raised: the item does not fit at all.
        grow_after: consecutive successful batches before the size doubles back (capped at ``batch_size``).
    """

    batch_size: int
    min_batch_size: int = 1
    grow_after: int = 4
    current_size: int = field(init=False)
    oom_count: int = field(init=False, default=0)
    _streak: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.current_size = self.batch_size

    def iter_batches(
        self, items: Sequence[T], fn: Callable[[Sequence[T]], Sequence[R]]
    ) -> Iterator[tuple[Sequence[T], Sequence[R]]]:
        """Yield ``(batch_items, fn(batch_items))`` covering ``items`` in order, each item once."""
        start = 0
        while start < len(items):
            batch = items[start : start + self.current_size]
            try:
                results = fn(batch)
            except BaseException as error:  # noqa: BLE001 - re-raised unless it is an OOM we can shrink past
                if not is_oom_error(error) or self.current_size <= self.min_batch_size:
                    raise
                self.oom_count += 1
                self._streak = 0
                _free_accelerator_cache()
                self.current_size = max(self.min_batch_size, self.current_size // 2)
                logger.warning("Out of memory on a batch of %d; retrying with %d", len(batch), self.current_size)
                continue
            if len(results) != len(batch):
                raise ValueError(f"batch function returned {len(results)} results for {len(batch)} items")
            yield batch, results
            start += len(batch)
            self._streak += 1
            if self._streak >= self.grow_after and self.current_size < self.batch_size:
                self.current_size = min(self.batch_size, self.current_size * 2)
                self._streak = 0

    def map(self, items: Sequence[T], fn: Callable[[Sequence[T]], Sequence[R]]) -> list[R]:
        """All results of ``fn`` over ``items``, in input order."""
        out: list[R] = []
        for _, results in self.iter_batches(items, fn):
            out.extend(results)
        return out


def padded_budget_groups(order: Sequence[int], lengths: Sequence[int], max_padded: int) -> list[list[int]]:
    """Split ``order`` (item positions sorted longest first) into consecutive groups whose padded size, items x
    the group's longest length, stays within ``max_padded``; an item longer than the budget is a group alone."""
    groups: list[list[int]] = []
    current: list[int] = []
    for position in order:
        longest = lengths[current[0]] if current else lengths[position]
        if current and (len(current) + 1) * max(longest, 1) > max_padded:
            groups.append(current)
            current = []
        current.append(position)
    if current:
        groups.append(current)
    return groups
