"""Shapes shared by every request: bodies refuse unknown fields and NUL characters; ids look like ids.

PostgreSQL cannot store a NUL character in text, and no legitimate id, reference or description holds one:
refusing it at the edge turns what would be a database error into a 422.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, field_validator


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple | set):
        return any(_holds_nul(item) for item in value)
    return False


class InputModel(BaseModel):
    """Base of request bodies."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _holds_nul(value):
            raise ValueError("text must not contain NUL characters")
        return value


ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
PRINTABLE_PATTERN = r"^[\x20-\x7e]+$"

ObjectId = Annotated[str, Path(pattern=ID_PATTERN, description="An object id such as `pi_01JD4Q9V6W...`")]
PrintableQuery = Annotated[str | None, Query(max_length=128, pattern=PRINTABLE_PATTERN)]
