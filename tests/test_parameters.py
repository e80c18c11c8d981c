"""The project's parameters against the typed sections: every key set in ``conf/`` is known and of the right type,
every dataclass field is set in ``conf/base``, the dataclass defaults are the values of ``conf/base``, and a run
with a misspelled key stops before any node."""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
from pathlib import Path
from typing import Any, Mapping

import click
import pytest
from kedro.config import OmegaConfigLoader
from kedro.framework.session import KedroSession
from omegaconf import OmegaConf

from multimodal_suite.common.params import ParamsError, from_params
from multimodal_suite.parameter_sections import (
    PARAMETER_SECTIONS,
    SharedParams,
    validate_parameters,
)
from multimodal_suite.pipelines.pss.params import TrainParams
from multimodal_suite.pipelines.tagging.params import SourceParams
from multimodal_suite.settings import CONFIG_LOADER_ARGS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
README_OVERRIDES = [  # the --params of the README's Ray Data engine commands
    "pss.precompute.engine=ray_data,pss.precompute.ray.num_replicas=4,pss.precompute.ray.num_gpus_per_replica=1",
    "tagging.source.engine=ray_data,tagging.source.ray.num_replicas=8,tagging.source.ray.num_gpus_per_replica=1",
]


@pytest.fixture(autouse=True)
def _no_pss_environment(monkeypatch):
    """conf/base as written: the PSS_* variables it reads are unset."""
    for name in list(os.environ):
        if name.startswith("PSS_"):
            monkeypatch.delenv(name)


def load_parameters(env: str, runtime_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parameters of ``env`` (merged over conf/base) as a Kedro run sees them."""
    loader = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), env=env, runtime_params=runtime_params,
                               **CONFIG_LOADER_ARGS)
    return loader["parameters"]


def _lookup(params: Mapping[str, Any], path: str) -> Any:
    for part in path.split("."):
        params = params.get(part) if isinstance(params, Mapping) else None
    return params


def _is_section(tp: Any) -> bool:
    """A dataclass whose fields are parameter keys (a type with its own parser, e.g. a ModelSpec, is one value)."""
    return (dataclasses.is_dataclass(tp) and not callable(getattr(tp, "parse", None))
            and not callable(getattr(tp, "from_dict", None)))


def unset_fields(cls: type, values: Any, path: str) -> list[str]:
    """Dotted paths of the fields of ``cls`` (nested sections included) that ``values`` does not set."""
    values = values if isinstance(values, Mapping) else {}
    missing = []
    for spec in dataclasses.fields(cls):
        key = f"{path}.{spec.name}" if path else spec.name
        if spec.name not in values:
            missing.append(key)
        elif _is_section(type(_default(spec))):
            missing += unset_fields(type(_default(spec)), values[spec.name], key)
    return missing


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None


def default_disagreements(cls: type, values: Any, path: str) -> list[str]:
    """``"<path>.<field>: default X, conf/base Y"`` for every field whose default is not the value ``values`` sets."""
    return _differences(cls(), from_params(cls, values, path), path)


def _differences(default: Any, built: Any, path: str) -> list[str]:
    found = []
    for spec in dataclasses.fields(default):
        mine, theirs = getattr(default, spec.name), getattr(built, spec.name)
        if mine == theirs:
            continue
        if _is_section(type(mine)):
            found += _differences(mine, theirs, f"{path}.{spec.name}")
        else:
            found.append(f"{path}.{spec.name}: default {mine!r}, conf/base {theirs!r}")
    return found


@pytest.fixture
def base() -> dict[str, Any]:
    return load_parameters("base")


@pytest.mark.parametrize("env", ["base", "demo"])
def test_every_key_of_every_environment_is_a_known_key_of_the_right_type(env):
    built = validate_parameters(load_parameters(env))
    assert set(built) == {*PARAMETER_SECTIONS, "parameters"}


def test_the_registry_covers_every_system():
    assert {name.split(".")[0] for name in PARAMETER_SECTIONS} == {"demo_data", "demo_data_tagging", "pss", "tagging"}


def test_every_field_is_set_in_conf_base(base):
    missing = unset_fields(SharedParams, base, "")
    for section, cls in PARAMETER_SECTIONS.items():
        missing += unset_fields(cls, _lookup(base, section), section)
    assert missing == []


def test_dataclass_defaults_are_the_values_of_conf_base(base):
    disagreements = default_disagreements(SharedParams, {"hub_offline": base["hub_offline"]}, "parameters")
    for section, cls in PARAMETER_SECTIONS.items():
        disagreements += default_disagreements(cls, _lookup(base, section), section)
    assert disagreements == []


def test_a_key_in_conf_that_no_field_reads_is_an_error(base):
    drifted = base | {"pss": base["pss"] | {"train": {**base["pss"]["train"], "extra_knob": 1}}}
    with pytest.raises(ParamsError, match=r"params:pss\.train has unknown key 'extra_knob'"):
        validate_parameters(drifted)


def test_a_default_that_disagrees_with_conf_base_or_a_field_it_lacks_is_named(base):
    @dataclasses.dataclass(frozen=True)
    class Drifted(TrainParams):
        epochs: int = 50
        extra_knob: int = 1

    values = {**base["pss"]["train"], "extra_knob": 1}
    assert default_disagreements(Drifted, values, "pss.train") == ["pss.train.epochs: default 50, conf/base 60"]
    assert unset_fields(Drifted, base["pss"]["train"], "pss.train") == ["pss.train.extra_knob"]


def test_nested_fields_are_held_to_conf_base_too(base):
    source = {**base["tagging"]["source"], "ray": {**base["tagging"]["source"]["ray"], "object_store_gb": 4}}
    assert default_disagreements(SourceParams, source, "tagging.source") == [
        "tagging.source.ray.object_store_gb: default 2, conf/base 4.0"]
    del source["ray"]["num_gpus"]
    assert unset_fields(SourceParams, source, "tagging.source") == ["tagging.source.ray.num_gpus"]


@pytest.mark.parametrize("overrides", README_OVERRIDES, ids=["pss", "tagging"])
def test_the_readme_engine_commands_set_typed_options(overrides):
    runtime = OmegaConf.to_container(OmegaConf.from_dotlist(overrides.split(",")))
    built = validate_parameters(load_parameters("base", runtime))
    section = "pss.precompute" if overrides.startswith("pss") else "tagging.source"
    assert built[section].engine == "ray_data"
    assert built[section].ray.num_replicas == (4 if section == "pss.precompute" else 8)
    assert built[section].ray.num_gpus_per_replica == 1.0


def test_environment_variables_arrive_typed(monkeypatch):
    monkeypatch.setenv("PSS_VIS_DIM", "1152")
    monkeypatch.setenv("PSS_FP16", "0")
    built = validate_parameters(load_parameters("base"))
    assert built["pss.precompute"].expected_visual_dim == 1152
    assert built["pss.precompute"].mixed_precision is False
    monkeypatch.delenv("PSS_FP16")
    assert validate_parameters(load_parameters("base"))["pss.precompute"].mixed_precision == "auto"


@pytest.mark.parametrize(("runtime_params", "named", "suggested"), [
    ({"pss": {"train": {"epoch": 3}}}, "'epoch'", "epochs"),
    ({"pss": {"trian": {"epochs": 3}}}, "'trian'", "train"),
    ({"tagging": {"hardware": {"num_gpus": 1}}}, "'hardware'", "source"),
])
def test_a_run_with_an_unknown_key_stops_when_the_context_is_created(project, runtime_params, named, suggested):
    with KedroSession.create(project_path=project, env="demo", runtime_params=runtime_params) as session:
        with pytest.raises(ParamsError) as raised:
            session.load_context()
    message = str(raised.value)
    assert named in message and suggested in message.split("valid keys:")[1]
    assert not (project / "mlflow.db").exists()  # nothing else ran
    # the kedro CLI prints a ClickException's message alone: one line, not a traceback
    assert isinstance(raised.value, click.ClickException) and raised.value.format_message() == message


# ----------------------------------------------------------------------------------------------------------------
# tagging.target.folder: a folder name, as the command line hands it over
# ----------------------------------------------------------------------------------------------------------------

NUMERIC_NAMES = ["00001", "00100", "00077", "1e3", "true"]
QUOTED_HINT = "--params \"tagging.target.folder='00100'\""


def cli_params(value: str) -> dict[str, Any]:
    """``--params value`` as ``kedro run`` parses it (the option's own callback)."""
    from kedro.framework.cli.utils import _split_params

    return _split_params(click.Context(click.Command("run")), click.Option(["--params"]), value)


def catalog_entry(runtime_params: dict[str, Any], name: str) -> dict[str, Any]:
    """Catalog entry ``name`` as a run with ``runtime_params`` resolves it."""
    loader = OmegaConfigLoader(conf_source=str(PROJECT_ROOT / "conf"), env="base", runtime_params=runtime_params,
                               **CONFIG_LOADER_ARGS)
    return loader["catalog"][name]


@pytest.mark.parametrize("name", NUMERIC_NAMES)
def test_a_folder_name_read_as_a_number_is_refused_and_the_quoted_form_reaches_kedro_as_written(name):
    runtime = cli_params(f"tagging.target.folder={name}")
    assert not isinstance(runtime["tagging"]["target"]["folder"], str)  # YAML 1.1 typed it
    with pytest.raises(ParamsError) as raised:
        validate_parameters(load_parameters("base", runtime))
    message = str(raised.value)
    assert "tagging.target.folder" in message and QUOTED_HINT in message and "\n" not in message

    runtime = cli_params(f"tagging.target.folder='{name}'")
    assert validate_parameters(load_parameters("base", runtime))["tagging.target"].folder == name
    assert catalog_entry(runtime, "tagging_target_images@folder")["filepath"] == f"data/01_raw/tagging_target/{name}"
    assert catalog_entry(runtime, "target_tags")["filepath"] == f"data/07_model_output/tagging/target/{name}/tags.json"


@pytest.mark.parametrize("name", ["..", "../../../etc", "/etc", "a/b", "a\\\\b", "''"])
def test_a_folder_name_that_would_leave_the_data_folder_is_refused(name):
    runtime = cli_params(f"tagging.target.folder={name}")
    with pytest.raises(ParamsError, match=r"tagging\.target\.folder .*one folder or file name"):
        validate_parameters(load_parameters("base", runtime))


@pytest.mark.parametrize("name", NUMERIC_NAMES)
def test_the_readme_target_commands_hand_over_any_folder_name_as_written(name):
    readme = (PROJECT_ROOT / "README.md").read_text()
    commands = [line for line in readme.splitlines()
                if re.match(r"kedro run --pipeline tagging_(target|retag) --params", line)]
    assert len(commands) == 2
    for command in commands:
        runtime = cli_params(shlex.split(command.replace("00290", name))[-1])
        assert validate_parameters(load_parameters("base", runtime))["tagging.target"].folder == name


def test_a_run_with_a_numeric_folder_stops_when_the_context_is_created(project):
    with KedroSession.create(project_path=project, env="demo",
                             runtime_params=cli_params("tagging.target.folder=00100")) as session:
        with pytest.raises(ParamsError) as raised:
            session.load_context()
    assert QUOTED_HINT in str(raised.value) and "64" in str(raised.value)
    assert isinstance(raised.value, click.ClickException)
