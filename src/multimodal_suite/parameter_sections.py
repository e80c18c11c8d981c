"""Every typed parameter section of the project, and the check of a whole parameter tree against them.

A section is named by its dotted path (``pss.train``) and typed by a dataclass of its system's ``params.py``.
:func:`validate_parameters` runs before any node (see :class:`~multimodal_suite.hooks.ParameterValidationHook`), so
a misspelled key in ``conf/`` or ``--params`` stops the run at once with the key, the valid keys and where to fix it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from multimodal_suite.common.params import WHERE, ParamsError, check_keys, from_params
from multimodal_suite.pipelines.demo_data.params import PARAMETER_SECTIONS as DEMO_DATA_SECTIONS
from multimodal_suite.pipelines.pss.params import PARAMETER_SECTIONS as PSS_SECTIONS
from multimodal_suite.pipelines.tagging.params import PARAMETER_SECTIONS as TAGGING_SECTIONS

PARAMETER_SECTIONS: dict[str, type] = {**DEMO_DATA_SECTIONS, **PSS_SECTIONS, **TAGGING_SECTIONS}
"""``{dotted section path: its dataclass}`` for every system."""


@dataclass(frozen=True)
class SharedParams:
    """Top-level parameters that are not a section (``conf/base/parameters.yml``).

    Args:
        hub_offline: model loaders never contact the Hugging Face hub (``HF_HUB_OFFLINE=1`` for the run).
    """

    hub_offline: bool = False


def _lookup(params: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` of ``params``; ``None`` where a level is absent."""
    value: Any = params
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _children(sections: list[str]) -> dict[str, set[str]]:
    """``{parent path: the names one level below it}`` of every level above a section (``"" → {"pss", …}``)."""
    children: dict[str, set[str]] = {}
    for section in sections:
        parts = section.split(".")
        for depth in range(len(parts)):
            children.setdefault(".".join(parts[:depth]), set()).add(parts[depth])
    return children


def validate_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Build every registered section of ``params`` (Kedro's whole parameter tree) into its dataclass.

    Args:
        params: the run's parameters, ``context.params``.

    Returns:
        ``{section path: its dataclass instance}``, plus ``"parameters"``: the :class:`SharedParams`.

    Raises:
        ParamsError: an unknown top-level key, an unknown section of a system (``pss.trian``), or a section that
            does not fit its dataclass (unknown key, wrong type).
    """
    shared_keys = [spec.name for spec in fields(SharedParams)]
    for parent, names in _children(list(PARAMETER_SECTIONS)).items():
        if not parent:
            check_keys(params, names | set(shared_keys), "the top level of the parameters")
            continue
        level = _lookup(params, parent)
        if isinstance(level, Mapping):
            check_keys(level, names, f"params:{parent}")
        elif level is not None:
            raise ParamsError(f"params:{parent} must be a mapping of sections, got {level!r} (set in {WHERE})")
    built: dict[str, Any] = {
        "parameters": from_params(SharedParams, {k: params[k] for k in shared_keys if k in params}, "parameters")
    }
    for section, cls in PARAMETER_SECTIONS.items():
        built[section] = from_params(cls, _lookup(params, section), section)
    return built
