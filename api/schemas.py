"""Bodies shared by several route modules (msgspec Structs; the OpenAPI schemas come from
them). Module-specific bodies live in their route module."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Email = Annotated[
    str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^\s*[^@\s]+@[^@\s]+\s*$")
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Role = Literal["student", "instructor", "admin"]
Kind = Literal["member", "staff"]
Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


def normalize_email(email: str) -> str:
    return email.strip().lower()


class UserOut(msgspec.Struct):
    id: int
    email: str
    display_name: str
    role: str
