"""demo_data parameter sections: defaults equal conf/base, YAML lists become tuples, bad values name the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from multimodal_suite.common.params import ParamsError, from_params, section_defaults
from multimodal_suite.pipelines.demo_data.params import PARAMETER_SECTIONS, DemoBooksConfig, DemoTaggingConfig

CONF_BASE = Path(__file__).resolve().parents[3] / "conf" / "base" / "parameters_demo_data.yml"


@pytest.fixture(scope="module")
def conf_base() -> dict:
    return yaml.safe_load(CONF_BASE.read_text())


def test_sections_are_the_ones_conf_base_sets(conf_base: dict) -> None:
    assert set(PARAMETER_SECTIONS) == set(conf_base)
    assert PARAMETER_SECTIONS == {"demo_data": DemoBooksConfig, "demo_data_tagging": DemoTaggingConfig}


@pytest.mark.parametrize("section", sorted(PARAMETER_SECTIONS))
def test_defaults_equal_conf_base(conf_base: dict, section: str) -> None:
    cls = PARAMETER_SECTIONS[section]
    assert from_params(cls, conf_base[section], section) == cls()
    assert section_defaults(cls) == conf_base[section]  # conf/base lists every key, with the same value


def test_yaml_lists_become_tuples() -> None:
    books = from_params(DemoBooksConfig, {"page_size": [320, 480]}, "demo_data")
    assert books.page_size == (320, 480)
    tagging = from_params(DemoTaggingConfig, {"image_size": [240, 200], "max_objects": 9,
                                              "target_folders": ["a", "b"]}, "demo_data_tagging")
    assert tagging.image_size == (240, 200) and tagging.grid == 3 and tagging.target_folders == ("a", "b")


@pytest.mark.parametrize(
    ("cls", "section", "values", "message"),
    [
        (DemoBooksConfig, "demo_data", {"num_book": 3}, r"params:demo_data has unknown key 'num_book' "
                                                        r"\(did you mean 'num_books'\?\).*valid keys: bad_inputs"),
        (DemoBooksConfig, "demo_data", {"page_size": [200]}, r"params:demo_data: 'page_size' must be a list of 2"),
        (DemoBooksConfig, "demo_data", {"bad_inputs": "yes"}, r"'bad_inputs' must be true or false"),
        (DemoBooksConfig, "demo_data", {"min_pages": 5}, r"params:demo_data: need 11 <= min_pages <= max_pages"),
        (DemoTaggingConfig, "demo_data_tagging", {"shards": 3}, r"unknown key 'shards'"),
        (DemoTaggingConfig, "demo_data_tagging", {"target_folders": [12]}, r"'target_folders\[0\]' must be a string"),
        (DemoTaggingConfig, "demo_data_tagging", {"image_size": [60, 60]}, r"image_size \[60, 60\] is too small"),
        (DemoTaggingConfig, "demo_data_tagging", {"num_shards": 1}, r"bad_inputs needs num_shards >= 2"),
        (DemoTaggingConfig, "demo_data_tagging", {"target_folders": ["a", "a"]}, r"target_folders must be distinct"),
        (DemoTaggingConfig, "demo_data_tagging", {"photo_share": 0.9, "figure_share": 0.2},
         r"photo_share \+ figure_share must be <= 1"),
    ],
)
def test_bad_values_raise_one_error_naming_the_section(cls: type, section: str, values: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        from_params(cls, values, section)


def test_configs_made_in_code_are_checked_too() -> None:
    with pytest.raises(ValueError, match="min_pages"):
        DemoBooksConfig(min_pages=40, max_pages=20)
    with pytest.raises(ValueError, match="jpeg_quality"):
        DemoTaggingConfig(jpeg_quality=0)
