"""The value types of the configuration (sizes, durations, environment variable names) and
its one error, phrased as a line the user can act on."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

DEFAULT_FILE = "orchestrator.yml"
ENV_PREFIX = "ORCHESTRATOR_"
ENV_FILE = "ORCHESTRATOR_CONFIG"


class ConfigError(Exception):
    """A configuration mistake, already phrased as one line the user can act on."""

    exit_code = 2


# ---------------------------------------------------------------- value types

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value: Any) -> int:
    """``'2g'``, ``'512m'``, ``'1.5GiB'`` or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (try '2g')")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value!r} is not a size (must be above 0; try '2g')")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size (try '2g')")
    number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * 1024 ** " kmgt".index(unit or " "))
    if size <= 0:
        raise ValueError(f"{value!r} is not a size (must be above 0; try '2g')")
    return size


def parse_duration(value: Any) -> float:
    """``'30m'``, ``'90s'``, ``'1h'`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (try '30m')")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (try '30m' or '90s')")
        seconds = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a duration (must be above 0; try '30m')")
    return seconds


# The schema accepts the written forms ("2g", "30m") that editors should complete.
Size = Annotated[int, BeforeValidator(parse_size, json_schema_input_type=int | str)]
Duration = Annotated[float, BeforeValidator(parse_duration, json_schema_input_type=float | str)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Permission = Literal["admin", "write", "read"]


class Section(BaseModel):
    """A part of the configuration: unknown keys are refused, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)
