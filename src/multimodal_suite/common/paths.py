"""The one rule for names that come from users or from data files and become part of a path.

A folder chosen on the command line, a book id from an annotation file, a sample key from a tar member name: each
is joined under a root folder, so each must be exactly one path component. Anything else (a separator, ``.`` or
``..``, an absolute path, a NUL, an empty name) could read or write outside that root, and is refused.
"""
from __future__ import annotations

from typing import Any

SEPARATORS = ("/", "\\")
"""Both separators are refused: a name must mean the same thing on every platform and object store."""


def component_problem(name: Any) -> str | None:
    """Why ``name`` is not one safe path component, or ``None`` when it is one."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a name"
    if not name:
        return "is empty"
    if "\0" in name:
        return "contains a NUL character"
    if name in (".", ".."):
        return f"is {name!r}, which names a folder relative to where it is used"
    separator = next((sep for sep in SEPARATORS if sep in name), None)
    if separator is not None:
        kind = "an absolute path" if name.startswith(separator) else "more than one path component"
        return f"is {kind} (it contains {separator!r})"
    return None


def is_safe_component(name: Any) -> bool:
    """Whether ``name`` is one path component: non-empty, no ``/`` or ``\\``, not ``.`` or ``..``, no NUL."""
    return component_problem(name) is None


def safe_component(name: Any, what: str) -> str:
    """``name`` when it is one safe path component (see :func:`is_safe_component`).

    Args:
        name: The name to check.
        what: What the name is, as the message names it (``"tagging.target.folder"``, ``"book id"``).

    Raises:
        ValueError: Naming ``what`` and the value, and what a valid name looks like.
    """
    problem = component_problem(name)
    if problem is not None:
        raise ValueError(f"{what} {name!r} {problem}; it must be one folder or file name, without '/', '\\', "
                         "'..' or a NUL")
    return name


def quoted_params_form(key: str, example: str) -> str:
    """The ``--params`` form that hands ``key`` the string ``example`` whatever it looks like.

    Kedro reads each ``--params`` value as YAML 1.1, so an unquoted ``00100`` arrives as the octal number 64; inside
    single quotes it stays the string. The double quotes keep the shell from removing the single ones.
    """
    return f"--params \"{key}='{example}'\""


def name_parameter(value: Any, key: str, example: str = "00100") -> str:
    """The parameter ``key``'s value when it is a string that is one safe path component.

    Args:
        value: The value as the configuration loader produced it (YAML-typed).
        key: The dotted parameter name (``"tagging.target.folder"``).
        example: A name shown in the quoting hint.

    Raises:
        ValueError: For a value YAML read as a number, a boolean or null (showing the quoted form that keeps it a
            string), or for a string that is not one path component.
    """
    if value is None or isinstance(value, (bool, int, float)):
        kind = "a boolean" if isinstance(value, bool) else "null" if value is None else f"the number {value!r}"
        raise ValueError(
            f"{key} arrived as {kind}, not a name: --params values are read as YAML, so unquoted digits become "
            f"numbers (00001 → 1, 00100 → octal 64, 1e3 → 1000.0) and true/false/yes/no/null are not strings; "
            f"quote the name: {quoted_params_form(key, example)}")
    return safe_component(value, key)
