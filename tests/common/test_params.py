"""Typed parameter sections: a dataclass from a parameter mapping, or one error naming the key and the valid ones."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from multimodal_suite.common.models import ModelSpec
from multimodal_suite.common.params import ParamsError, check_keys, from_params, section_defaults, to_params


@dataclass(frozen=True)
class Sheet:
    max_crops: int = 48
    thumb_size: int = 96


@dataclass(frozen=True)
class Section:
    epochs: int = 60
    learning_rate: float = 2e-4
    mixed_precision: bool = False
    device: str = "auto"
    schedule: Literal["cosine", "inverse_sqrt"] = "cosine"
    end_shard: int | None = None
    page_size: tuple[int, int] = (200, 300)
    folders: tuple[str, ...] = ("00290",)
    model: ModelSpec = ModelSpec(source="bundled", family="sentence_transformer", name="all-MiniLM-L6-v2")
    sheet: Sheet = Sheet()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Required:
    folder: str


def test_keys_left_out_take_the_defaults_and_set_keys_their_values():
    built = from_params(Section, {"epochs": 3, "schedule": "inverse_sqrt"}, "pss.train")
    assert built == Section(epochs=3, schedule="inverse_sqrt")
    assert from_params(Section, None, "pss.train") == Section()


def test_an_instance_is_returned_as_it_is():
    instance = Section(epochs=2)
    assert from_params(Section, instance, "pss.train") is instance


def test_unknown_key_names_the_section_the_closest_key_and_all_valid_keys():
    with pytest.raises(ParamsError) as raised:
        from_params(Section, {"epoch": 3}, "pss.train")
    message = str(raised.value)
    assert message.startswith("params:pss.train has unknown key 'epoch' (did you mean 'epochs'?)")
    assert "valid keys: device, end_shard, epochs, extra, folders" in message


def test_every_unknown_key_is_named_at_once():
    with pytest.raises(ParamsError, match=r"unknown keys 'epoch' \(did you mean 'epochs'\?\), 'zzz'"):
        from_params(Section, {"epoch": 3, "zzz": 1}, "pss.train")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("epochs", "3", "'epochs' must be an integer, got '3'"),
    ("epochs", 3.5, "'epochs' must be an integer, got 3.5"),
    ("epochs", True, "'epochs' must be an integer, got True"),
    ("learning_rate", "fast", "'learning_rate' must be a number, got 'fast'"),
    ("mixed_precision", 1, "'mixed_precision' must be true or false, got 1"),
    ("device", 0, "'device' must be a string, got 0"),
    ("end_shard", "last", "'end_shard' must be an integer, got 'last'"),
    ("page_size", 200, "'page_size' must be a list, got 200"),
])
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(key, value, expected):
    with pytest.raises(ParamsError, match="^params:pss\\.train: " + re.escape(expected)):
        from_params(Section, {key: value}, "pss.train")


def test_an_int_is_a_valid_float_and_becomes_one():
    built = from_params(Section, {"learning_rate": 1}, "pss.train")
    assert built.learning_rate == 1.0 and isinstance(built.learning_rate, float)


def test_literal_accepts_its_choices_only():
    assert from_params(Section, {"schedule": "inverse_sqrt"}, "s").schedule == "inverse_sqrt"
    with pytest.raises(ParamsError, match=r"'schedule' must be 'cosine' or 'inverse_sqrt', got 'linear'"):
        from_params(Section, {"schedule": "linear"}, "s")


def test_none_is_accepted_only_where_the_type_allows_it():
    assert from_params(Section, {"end_shard": None}, "s").end_shard is None
    assert from_params(Section, {"end_shard": 4}, "s").end_shard == 4
    with pytest.raises(ParamsError, match=r"'epochs' must be set \(expected int\), got null"):
        from_params(Section, {"epochs": None}, "s")


def test_yaml_lists_become_tuples_of_the_element_type_with_the_right_length():
    built = from_params(Section, {"page_size": [64, 96], "folders": ["a", "b", "c"]}, "s")
    assert built.page_size == (64, 96) and built.folders == ("a", "b", "c")
    with pytest.raises(ParamsError, match=r"'page_size' must be a list of 2 values, got \[64\]"):
        from_params(Section, {"page_size": [64]}, "s")
    with pytest.raises(ParamsError, match=r"'page_size\[1\]' must be an integer, got 'x'"):
        from_params(Section, {"page_size": [64, "x"]}, "s")
    with pytest.raises(ParamsError, match=r"'folders\[0\]' must be a string, got 290"):
        from_params(Section, {"folders": [290]}, "s")


def test_nested_sections_are_built_and_their_errors_name_the_nested_path():
    built = from_params(Section, {"sheet": {"max_crops": 12}}, "tagging.target")
    assert built.sheet == Sheet(max_crops=12, thumb_size=96)
    with pytest.raises(ParamsError, match=r"params:tagging\.target\.sheet has unknown key 'thumb' "
                                          r"\(did you mean 'thumb_size'\?\)"):
        from_params(Section, {"sheet": {"thumb": 12}}, "tagging.target")
    with pytest.raises(ParamsError, match=r"params:tagging\.target\.sheet: 'max_crops' must be an integer"):
        from_params(Section, {"sheet": {"max_crops": "all"}}, "tagging.target")


def test_a_model_spec_is_parsed_by_its_own_parser():
    built = from_params(Section, {"model": {"source": "hf", "family": "clip", "id": "openai/clip-vit-base-patch32"}},
                        "tagging.models")
    assert built.model == ModelSpec(source="hf", family="clip", id="openai/clip-vit-base-patch32")
    with pytest.raises(ParamsError, match=r"params:tagging\.models: 'model' is not a valid ModelSpec: .*'source'"):
        from_params(Section, {"model": {"source": "ftp", "id": "x"}}, "tagging.models")


def test_mappings_are_taken_as_they_are_but_must_be_mappings():
    assert from_params(Section, {"extra": {"a": [1]}}, "s").extra == {"a": [1]}
    with pytest.raises(ParamsError, match=r"'extra' must be a mapping, got \[1\]"):
        from_params(Section, {"extra": [1]}, "s")


def test_a_section_that_is_not_a_mapping_is_an_error():
    with pytest.raises(ParamsError, match=r"params:pss\.train must be a mapping of keys to values, got 3"):
        from_params(Section, 3, "pss.train")


def test_a_missing_required_key_is_named():
    with pytest.raises(ParamsError, match=r"params:tagging\.target is missing the required key 'folder'"):
        from_params(Required, {}, "tagging.target")


def test_an_error_raised_by_the_dataclass_itself_names_the_section():
    @dataclass(frozen=True)
    class Fractions:
        val_fraction: float = 0.15

        def __post_init__(self) -> None:
            if not 0 < self.val_fraction < 1:
                raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    with pytest.raises(ParamsError, match=r"^params:pss\.split: val_fraction must be in \(0, 1\), got 2\.0"):
        from_params(Fractions, {"val_fraction": 2}, "pss.split")


def test_to_params_and_section_defaults_are_the_inverse_of_from_params():
    defaults = section_defaults(Section)
    assert defaults["page_size"] == [200, 300] and defaults["sheet"] == {"max_crops": 48, "thumb_size": 96}
    assert defaults["model"]["source"] == "bundled"
    assert from_params(Section, defaults, "s") == Section()
    changed = Section(epochs=3, sheet=Sheet(max_crops=1), folders=("x", "y"))
    assert from_params(Section, to_params(changed), "s") == changed
    assert "folder" not in section_defaults(Required)


def test_check_keys_names_every_unknown_key_and_passes_known_ones():
    check_keys({"pss": {}}, {"pss", "tagging"}, "parameters")
    with pytest.raises(ParamsError, match=r"^params:pss has unknown key 'trian' \(did you mean 'train'\?\).*"
                                          r"valid keys: split, train$"):
        check_keys(["trian"], {"train", "split"}, "params:pss")
