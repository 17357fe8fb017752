from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from paymux.core.inputs import InputModel

Email = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
]


class LoginRequest(InputModel):
    email: Email
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(InputModel):
    refresh_token: str = Field(min_length=1, max_length=200)


class ImpersonateRequest(InputModel):
    user_id: str = Field(pattern=r"^usr_[0-9A-Z]{26}$")


class TokenResponse(BaseModel):
    access_token: str = Field(description="An ES256 JWT, verified with the keys at /.well-known/jwks.json")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int = Field(description="Seconds the access token lives", examples=[900])
    refresh_token: str = Field(
        description="Spent by its first use at /api/v1/auth/refresh, which gives a new one"
    )


class Jwks(BaseModel):
    keys: list[dict[str, Any]]
