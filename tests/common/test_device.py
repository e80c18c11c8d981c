import torch

from multimodal_suite.common.device import autocast_context, autocast_dtype, pick_device


def test_pick_device_prefers_explicit_then_available():
    assert pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert pick_device("auto").type == expected


def test_autocast_dtype_per_device():
    assert autocast_dtype(torch.device("cuda")) is torch.float16
    assert autocast_dtype(torch.device("cpu")) is torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), mixed_precision=False) is None
    with autocast_context(torch.device("cpu"), torch.bfloat16):
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype is torch.bfloat16
