import logging

import pytest
import torch

from multimodal_suite.common import device as device_module
from multimodal_suite.common.device import autocast_context, autocast_dtype, cpu_supports_bf16, pick_device


def test_pick_device_prefers_explicit_then_available():
    assert pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert pick_device("auto").type == expected


def test_explicit_settings_override_the_device_default():
    assert autocast_dtype(torch.device("cuda"), True) is torch.float16
    assert autocast_dtype(torch.device("cuda"), "auto") is torch.float16
    assert autocast_dtype(torch.device("cpu"), True) is torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), False) is None
    assert autocast_dtype(torch.device("cuda"), False) is None
    with autocast_context(torch.device("cpu"), torch.bfloat16):
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype is torch.bfloat16


@pytest.mark.parametrize("has_bf16, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_on_cpu_follows_the_cpus_bf16_instructions(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(device_module, "cpu_supports_bf16", lambda: has_bf16)
    assert autocast_dtype(torch.device("cpu"), "auto") is expected


def test_auto_matches_this_machine_and_logs_its_reason(caplog):
    device_module._logged.clear()
    with caplog.at_level(logging.INFO, logger="multimodal_suite.common.device"):
        dtype = autocast_dtype(torch.device("cpu"), "auto")
        autocast_dtype(torch.device("cpu"), "auto")  # logged once per device and setting
    assert dtype is (torch.bfloat16 if cpu_supports_bf16() else None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Precision on cpu")]
    assert len(lines) == 1
    assert ("bf16" if cpu_supports_bf16() else "fp32") in lines[0] and "auto" in lines[0]


def test_a_bad_setting_is_refused():
    with pytest.raises(ValueError, match="auto, true or false"):
        autocast_dtype(torch.device("cpu"), "fast")
