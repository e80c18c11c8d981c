"""OmegaConf resolvers for configuration: environment variables with defaults, typed and validated.

``${oc.env:PSS_ROOT,data/01_raw/comic_books}`` reads a string; ``${env_bool:FLAG,1}``,
``${env_int:PSS_PRECOMP_BATCH,32}`` and ``${env_float:PSS_DROPOUT,0.4}`` also parse and reject malformed values with
a message that names the variable, so ``PSS_FP16=maybe`` fails before anything runs; ``${env_bool_or_auto:PSS_FP16,auto}``
also takes ``auto``. ``${abspath:mlflow.db}``
pins a project-relative path to the directory the run started in.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable

from omegaconf.resolvers import oc

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, default: Any) -> tuple[str, bool]:
    value = os.environ.get(name)
    return (str(default) if value is None else value), value is not None


def env_bool(name: str, default: Any = "0") -> bool:
    """Environment variable ``name`` as a boolean (1/0, true/false, yes/no, on/off)."""
    value, from_env = _raw(name, default)
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    where = f"environment variable {name}" if from_env else f"default for {name}"
    raise ValueError(f"{where}={value!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def _typed(kind: type, label: str) -> Callable[[str, Any], Any]:
    def resolve(name: str, default: Any = None) -> Any:
        if os.environ.get(name) is None and default is None:
            return None
        value, from_env = _raw(name, default)
        try:
            return kind(value.strip())
        except (TypeError, ValueError):
            where = f"environment variable {name}" if from_env else f"default for {name}"
            raise ValueError(f"{where}={value!r} is not {label}") from None

    resolve.__doc__ = f"Environment variable ``name`` parsed as {label}."
    return resolve


env_int = _typed(int, "an integer")
env_float = _typed(float, "a number")


def env_bool_or_auto(name: str, default: Any = "auto") -> bool | str:
    """Environment variable ``name`` as ``auto`` or a boolean (a setting whose default is chosen per machine)."""
    value, _ = _raw(name, default)
    if value.strip().lower() == "auto":
        return "auto"
    return env_bool(name, default)


def ignored_env(name: str, default: Any, parameter: str) -> Any:
    """``default``, whatever ``name`` says: for a variable the original scripts read but never used.

    A carried-over value therefore changes nothing, as it did there, but a warning names the ``parameter`` that
    does what the variable's name suggests.
    """
    value = os.environ.get(name)
    if value is not None:
        # warnings, not logging: shown once per process although Kedro resolves the parameters several times
        warnings.warn(f"environment variable {name}={value!r} has no effect (the original scripts stored it but "
                      f"never used it); set {parameter} in conf/ or with --params to change it", stacklevel=2)
    return default


def abspath(path: str) -> str:
    """``path`` made absolute against the working directory (Kedro runs from the project root)."""
    return os.path.abspath(path)


CONFIG_RESOLVERS: dict[str, Callable[..., Any]] = {
    "abspath": abspath,
    "oc.env": oc.env,
    "env_bool": env_bool,
    "env_int": env_int,
    "env_float": env_float,
    "ignored_env": ignored_env,
    "env_bool_or_auto": env_bool_or_auto,
}
