"""Typed parameter sections: one dataclass per section of ``conf/base/parameters_<system>.yml``.

Nodes take the section they use (``params:pss.train``) and turn it into its dataclass at the boundary with
:func:`from_params`. ``conf/base`` is the one source of defaults (a test holds the dataclass defaults to it); a
misspelled or unknown key, a missing required key or a value of the wrong type raises one :class:`ParamsError`
that names the key, where it is set and the valid keys — never a silent fallback.

Field types understood: ``bool``, ``int``, ``float`` (an int is accepted), ``str``, ``X | None``,
``Literal[...]`` (the choices), ``tuple[int, ...]`` / ``tuple[int, int]`` / ``list[str]`` (YAML lists),
``dict[...]`` / ``Mapping[...]`` / ``Any`` (taken as they are), nested dataclasses (recursively), and classes with
a ``parse`` or ``from_dict`` classmethod (``ModelSpec``, ``SegmenterConfig``).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")

WHERE = "conf/<env>/parameters_*.yml or --params"


class ParamsError(ValueError):
    """A parameter section does not fit its dataclass (unknown key, missing key, wrong type or value)."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _one_of(choices: tuple[Any, ...]) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b' or 'c'``."""
    names = [repr(choice) for choice in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _fail(section: str, key: str, message: str) -> ParamsError:
    return ParamsError(f"params:{section}: {key!r} {message} (set in {WHERE})")


def _convert(value: Any, tp: Any, section: str, key: str) -> Any:
    """``value`` as type ``tp``, or a ParamsError naming ``section.key``."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise _fail(section, key, f"must be set (expected {_type_name(tp)}), got null")
        candidates = [option for option in options if option is not type(None)]
        if len(candidates) == 1:
            return _convert(value, candidates[0], section, key)
        for option in candidates:
            try:
                return _convert(value, option, section, key)
            except ParamsError:
                continue
        raise _fail(section, key, f"must be {_type_name(tp)}, got {value!r}")
    if value is None:
        raise _fail(section, key, f"must be set (expected {_type_name(tp)}), got null")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise _fail(section, key, f"must be {_one_of(choices)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _fail(section, key, f"must be a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _fail(section, key, f"must be a list of {len(args)} values, got {value!r}")
            items = [_convert(v, a, section, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            element = args[0] if args else Any
            items = [_convert(v, element, section, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp in (dict, Mapping) or origin is typing.get_origin(Mapping[str, Any]):
        if not isinstance(value, Mapping):
            raise _fail(section, key, f"must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(section, key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(section, key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(section, key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(section, key, f"must be a string, got {value!r}")
        return value
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        # A class that parses itself (ModelSpec, SegmenterConfig) knows its own forms best.
        for hook in ("parse", "from_dict"):
            if callable(getattr(tp, hook, None)):
                try:
                    return getattr(tp, hook)(value)
                except (TypeError, ValueError, KeyError) as error:
                    raise _fail(section, key, f"is not a valid {tp.__name__}: {error}") from error
        if dataclasses.is_dataclass(tp):
            return from_params(tp, value, f"{section}.{key}")
    raise _fail(section, key, f"has a type this loader does not know: {_type_name(tp)}")


def check_keys(keys: Iterable[Any], valid: Iterable[str], where: str) -> None:
    """Raise one :class:`ParamsError` naming every key of ``keys`` not in ``valid``, the closest valid key of each
    and all of them.

    Args:
        keys: the keys a mapping sets.
        valid: the keys it may set.
        where: the mapping, as the message names it (``"params:pss.train"``).
    """
    valid = sorted(valid)
    unknown = [key for key in keys if key not in valid]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), valid, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ParamsError(
        f"{where} has unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)} "
        f"(set in {WHERE}); valid keys: {', '.join(valid)}"
    )


def from_params(cls: type[T], values: Mapping[str, Any] | T | None, section: str) -> T:
    """Build the dataclass ``cls`` from the parameter mapping of ``section`` (e.g. ``"pss.train"``).

    Keys left out take the dataclass default (the same value as ``conf/base``); an instance of ``cls`` is
    returned as it is, so tests and callers may pass either.

    Raises:
        ParamsError: an unknown key (with the closest valid key, and all of them), a missing required key, or a
            value of the wrong type.
    """
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ParamsError(f"params:{section} must be a mapping of keys to values, got {values!r} (set in {WHERE})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(values, fields, f"params:{section}")
    hints_of = typing.get_type_hints(cls)
    kwargs = {}
    for name, spec in fields.items():
        if name in values:
            kwargs[name] = _convert(values[name], hints_of[name], section, name)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ParamsError(f"params:{section} is missing the required key {name!r} (set it in {WHERE}); "
                              f"valid keys: {', '.join(sorted(fields))}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        if isinstance(error, ParamsError):
            raise
        raise ParamsError(f"params:{section}: {error} (set in {WHERE})") from error


def to_params(instance: Any) -> Any:
    """A dataclass (or nested structure of them) as plain parameter values, the inverse of :func:`from_params`."""
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        if callable(getattr(instance, "to_dict", None)):
            return instance.to_dict()
        return {f.name: to_params(getattr(instance, f.name)) for f in dataclasses.fields(instance) if f.init}
    if isinstance(instance, tuple):
        return [to_params(v) for v in instance]
    if isinstance(instance, list):
        return [to_params(v) for v in instance]
    if isinstance(instance, Mapping):
        return {k: to_params(v) for k, v in instance.items()}
    return instance


def section_defaults(cls: type) -> dict[str, Any]:
    """The dataclass defaults of ``cls`` as parameter values (what ``conf/base`` must say); required keys left out."""
    out: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        if not spec.init:
            continue
        if spec.default is not dataclasses.MISSING:
            out[spec.name] = to_params(spec.default)
        elif spec.default_factory is not dataclasses.MISSING:
            out[spec.name] = to_params(spec.default_factory())
    return out
