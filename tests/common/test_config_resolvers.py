import pytest

from multimodal_suite.config_resolvers import env_bool, env_bool_or_auto, env_float, env_int


def test_env_bool_parses_and_rejects_malformed(monkeypatch):
    monkeypatch.delenv("PSS_FP16", raising=False)
    assert env_bool("PSS_FP16", "1") is True
    monkeypatch.setenv("PSS_FP16", "off")
    assert env_bool("PSS_FP16", "1") is False
    monkeypatch.setenv("PSS_FP16", "maybe")
    with pytest.raises(ValueError, match="PSS_FP16='maybe' is not a boolean"):
        env_bool("PSS_FP16", "1")


def test_env_int_float(monkeypatch):
    monkeypatch.setenv("PSS_PRECOMP_BATCH", "8")
    assert env_int("PSS_PRECOMP_BATCH", 32) == 8
    monkeypatch.setenv("PSS_PRECOMP_BATCH", "eight")
    with pytest.raises(ValueError, match="not an integer"):
        env_int("PSS_PRECOMP_BATCH", 32)
    monkeypatch.delenv("PSS_VIS_DIM", raising=False)
    assert env_int("PSS_VIS_DIM", None) is None
    assert env_float("PSS_DROPOUT_UNSET_X", "0.25") == 0.25


def test_env_bool_or_auto_takes_auto_or_a_boolean(monkeypatch):
    monkeypatch.delenv("PSS_FP16", raising=False)
    assert env_bool_or_auto("PSS_FP16", "auto") == "auto"
    for value, expected in (("AUTO", "auto"), ("1", True), ("off", False)):
        monkeypatch.setenv("PSS_FP16", value)
        assert env_bool_or_auto("PSS_FP16", "auto") == expected
    monkeypatch.setenv("PSS_FP16", "maybe")
    with pytest.raises(ValueError, match="PSS_FP16='maybe' is not a boolean"):
        env_bool_or_auto("PSS_FP16", "auto")
