"""The base of every config section: frozen, unknown keys forbidden, lists from commas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: frozen, strict about unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def split_commas(value: Any) -> Any:
    """LLaMA-Factory writes lists as "a,b,c"; accept that as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
