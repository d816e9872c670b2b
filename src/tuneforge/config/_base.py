"""The base of every config section: frozen, unknown keys forbidden, lists from commas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tuneforge.errors import ConfigError, Issue

S = TypeVar("S", bound=BaseModel)


class Section(BaseModel):
    """A config section: frozen, strict about unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def split_commas(value: Any) -> Any:
    """LLaMA-Factory writes lists as "a,b,c"; accept that as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def validate_values(cls: type[S], values: Mapping[str, Any], source: str) -> S:
    """`cls` from plain values; every validation problem becomes one ConfigError.

    Raises:
        ConfigError: a value is missing, of the wrong type, or the combination is invalid.
    """
    try:
        return cls.model_validate(dict(values))
    except ValidationError as exc:
        raise config_error(exc, source) from None


def config_error(exc: ValidationError, source: str) -> ConfigError:
    """pydantic's validation problems as one ConfigError, each naming its field."""
    issues = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        if message.startswith("Input should be "):
            message = "expected " + message.removeprefix("Input should be ")
            message += f", got {err['input']!r}"
        if err["type"] == "missing":
            message = "is required"
        field = ".".join(str(p) for p in err["loc"]) or None
        issues.append(Issue(message, file=source, field=field))
    return ConfigError(issues)
