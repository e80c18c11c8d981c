"""OmegaConf resolvers for configuration: environment variables with defaults, typed and validated.

``${oc.env:PSS_ROOT,data/01_raw/comic_books}`` reads a string; ``${env_bool:PSS_FP16,1}``,
``${env_int:PSS_PRECOMP_BATCH,32}`` and ``${env_float:PSS_DROPOUT,0.4}`` also parse and reject malformed values with
a message that names the variable, so ``PSS_FP16=maybe`` fails before anything runs. ``${abspath:mlflow.db}``
pins a project-relative path to the directory the run started in.
"""
from __future__ import annotations

import os
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

def abspath(path: str) -> str:
    """``path`` made absolute against the working directory (Kedro runs from the project root)."""
    return os.path.abspath(path)


CONFIG_RESOLVERS: dict[str, Callable[..., Any]] = {
    "abspath": abspath,
    "oc.env": oc.env,
    "env_bool": env_bool,
    "env_int": env_int,
    "env_float": env_float,
}
