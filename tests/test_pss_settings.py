"""The PSS_* environment variables do what they say in every environment: a set variable wins over conf/demo as
over conf/base, and PSS_HIDDEN, which the original scripts never used, leaves the architecture alone."""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from kedro.config import OmegaConfigLoader
from torch import nn

from multimodal_suite.models.bookbert import BookBERTConfig, BookBERTMultimodal2
from multimodal_suite.parameter_sections import validate_parameters
from multimodal_suite.settings import CONFIG_LOADER_ARGS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# variable, typed section, field, value set (neither the base default nor the demo fallback), demo fallback
ENVIRONMENT_SETTINGS = [
    ("PSS_NUM_LAYERS", "pss.model", "num_layers", "3", 3, 2),
    ("PSS_NUM_HEADS", "pss.model", "num_heads", "8", 8, 4),
    ("PSS_DROPOUT", "pss.model", "dropout", "0.15", 0.15, 0.3),
    ("PSS_BERT_INPUT", "pss.model", "bert_input", "192", 192, 128),
    ("PSS_PROJ_DIM", "pss.model", "ff_dim", "320", 320, 256),
    ("PSS_PRECOMP_BATCH", "pss.precompute", "batch_size", "12", 12, 64),
]


@pytest.fixture(autouse=True)
def _no_pss_environment(monkeypatch):
    """Only the variable a test sets: the PSS_* variables of the shell running the tests are unset."""
    for name in list(os.environ):
        if name.startswith("PSS_"):
            monkeypatch.delenv(name)


def built_parameters(env: str, runtime_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The typed parameter sections of ``env`` as a Kedro run loads and checks them."""
    loader = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), env=env, runtime_params=runtime_params,
                               **CONFIG_LOADER_ARGS)
    return validate_parameters(loader["parameters"])


def bookbert_of(env: str, runtime_params: dict[str, Any] | None = None) -> BookBERTMultimodal2:
    """The BookBERT that ``train_bookbert`` would build from ``env``'s pss.model (embedding widths made up)."""
    model = built_parameters(env, runtime_params)["pss.model"]
    return BookBERTMultimodal2(BookBERTConfig(**asdict(model), text_dim=4, visual_dim=4))


@pytest.mark.parametrize("env", ["base", "demo"])
@pytest.mark.parametrize(("variable", "section", "key", "value", "expected", "demo_fallback"), ENVIRONMENT_SETTINGS,
                         ids=[setting[0] for setting in ENVIRONMENT_SETTINGS])
def test_a_set_variable_wins_in_every_environment(monkeypatch, env, variable, section, key, value, expected,
                                                  demo_fallback):
    monkeypatch.setenv(variable, value)
    assert getattr(built_parameters(env)[section], key) == expected


@pytest.mark.parametrize(("variable", "section", "key", "value", "expected", "demo_fallback"), ENVIRONMENT_SETTINGS,
                         ids=[setting[0] for setting in ENVIRONMENT_SETTINGS])
def test_unset_variables_fall_back_to_the_demo_values(variable, section, key, value, expected, demo_fallback):
    assert getattr(built_parameters("demo")[section], key) == demo_fallback


@pytest.mark.parametrize("env", ["base", "demo"])
def test_pss_hidden_has_no_effect_on_the_architecture_and_says_so(monkeypatch, env):
    monkeypatch.setenv("PSS_HIDDEN", "256")
    with pytest.warns(UserWarning, match=r"PSS_HIDDEN='256' has no effect .* set pss\.model\.head_hidden_dim"):
        model = bookbert_of(env)
    assert model.config.head_hidden_dim == 0
    assert isinstance(model.classifier, nn.Linear)  # the single linear head of the original scripts


def test_no_warning_about_pss_hidden_when_it_is_unset():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built_parameters("base")
    assert not [w for w in caught if "PSS_HIDDEN" in str(w.message)]


def test_the_extra_head_layer_is_asked_for_by_the_parameter():
    model = bookbert_of("demo", {"pss": {"model": {"head_hidden_dim": 256}}})
    assert isinstance(model.classifier, nn.Sequential)
    assert model.classifier[0].out_features == 256 and model.classifier[-1].in_features == 256
