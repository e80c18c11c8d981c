import pytest
import torch

from multimodal_suite.common.batching import DynamicBatcher, is_oom_error


class FlakyModel:
    """Raises an OOM error whenever a batch is larger than ``limit`` (the limit can change between calls)."""

    def __init__(self, limits):
        self.limits = list(limits)
        self.calls: list[int] = []

    def __call__(self, batch):
        self.calls.append(len(batch))
        limit = self.limits.pop(0) if len(self.limits) > 1 else self.limits[0]
        if len(batch) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [item * 10 for item in batch]


def test_halves_on_oom_and_never_loses_or_duplicates_items():
    items = list(range(100))
    model = FlakyModel([5])
    batcher = DynamicBatcher(batch_size=32, grow_after=1000)
    assert batcher.map(items, model) == [i * 10 for i in items]
    # 32 -> 16 -> 8 -> 4 then steady at 4
    assert model.calls[:4] == [32, 16, 8, 4]
    assert batcher.current_size == 4
    assert batcher.oom_count == 3


def test_grows_back_after_successes_capped_at_start_size():
    items = list(range(200))
    # first call OOMs at 16, afterwards memory is plentiful
    model = FlakyModel([8, 1000])
    batcher = DynamicBatcher(batch_size=16, grow_after=2)
    out = batcher.map(items, model)
    assert out == [i * 10 for i in items]
    assert 16 in model.calls[2:], "the batch size should grow back to the starting size"
    assert max(model.calls) == 16


def test_oom_at_min_batch_size_is_raised():
    batcher = DynamicBatcher(batch_size=4, min_batch_size=2)
    with pytest.raises(torch.OutOfMemoryError):
        batcher.map(list(range(10)), FlakyModel([1]))


def test_other_errors_propagate_unchanged():
    def broken(batch):
        raise KeyError("not memory")

    with pytest.raises(KeyError):
        DynamicBatcher(batch_size=4).map([1, 2, 3], broken)


def test_result_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="returned 1 results for 3 items"):
        DynamicBatcher(batch_size=3).map([1, 2, 3], lambda batch: [0])


def test_recognises_cpu_allocator_oom_message():
    assert is_oom_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert not is_oom_error(RuntimeError("shape mismatch"))


def test_padded_budget_groups_bound_items_times_longest():
    from multimodal_suite.common.batching import padded_budget_groups

    lengths = [300, 10, 120, 60, 60, 5, 200]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    groups = padded_budget_groups(order, lengths, max_padded=250)
    assert [i for group in groups for i in group] == order  # every item once, in order
    assert groups[0] == [0]  # longer than the budget: alone
    for group in groups[1:]:
        assert len(group) * max(lengths[i] for i in group) <= 250
    assert groups == [[0], [6], [2, 3], [4, 1, 5]]
