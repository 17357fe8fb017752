from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from paymux.auth.models import ApiClient, Device, User
from paymux.core.inputs import InputModel
from paymux.gateway.principal import Role

TenantId = Annotated[int, Field(strict=True, gt=0, lt=2**53)]

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


# ---------------------------------------------------------------- POS devices


class DeviceTokenResponse(BaseModel):
    """RFC 6749 section 5.1: the device's access token."""

    access_token: str = Field(description="An ES256 JWT with the claims of seed 003's JWT Claims (Device)")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int = Field(description="Seconds the access token lives", examples=[90])
    scope: str = Field(description="The granted scopes, space-separated", examples=["payment:create"])


class OAuthErrorOut(BaseModel):
    """RFC 6749 section 5.2, with the problem+json members beside it."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(examples=["invalid_client"])
    error_description: str


class DeviceRegister(InputModel):
    store_id: TenantId
    serial_number: str = Field(min_length=1, max_length=64, examples=["ABC123"])
    jwk: dict[str, Any] = Field(description="The device's EC P-256 public key as a JWK")
    scopes: list[str] = Field(min_length=1, max_length=20, examples=[["payment:create", "payment:read"]])


class DeviceOut(BaseModel):
    object: Literal["device"] = "device"
    id: str = Field(description="The device's OAuth2 client_id")
    client_id: str
    serial_number: str
    client_partner_id: int
    merchant_id: int
    store_id: int
    jwk: dict[str, str]
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls(
            id=device.id,
            client_id=device.id,
            serial_number=device.serial_number,
            client_partner_id=device.client_partner_id,
            merchant_id=device.merchant_id,
            store_id=device.store_id,
            jwk=dict(device.public_jwk),
            scopes=list(device.scopes),
            created_at=device.created_at,
            revoked_at=device.revoked_at,
        )


class DeviceList(BaseModel):
    data: list[DeviceOut]
    has_more: bool


# ---------------------------------------------------------------- users


class UserCreate(InputModel):
    email: Email
    password: str = Field(min_length=12, max_length=1024)
    role: Role
    client_partner_id: TenantId | None = None
    merchant_id: TenantId | None = None
    store_id: TenantId | None = None


class UserUpdate(InputModel):
    """A new role with its scope (the narrowest id; the admin's own when omitted), or is_active."""

    role: Role | None = None
    client_partner_id: TenantId | None = None
    merchant_id: TenantId | None = None
    store_id: TenantId | None = None
    is_active: bool | None = None


class UserOut(BaseModel):
    object: Literal["user"] = "user"
    id: str
    email: str
    role: Role
    client_partner_id: int | None
    merchant_id: int | None
    store_id: int | None
    is_active: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            role=Role(user.role),
            client_partner_id=user.client_partner_id,
            merchant_id=user.merchant_id,
            store_id=user.store_id,
            is_active=user.is_active,
            created_at=user.created_at,
        )


class UserList(BaseModel):
    data: list[UserOut]
    has_more: bool


# ---------------------------------------------------------------- API clients


class ApiClientCreate(InputModel):
    name: str = Field(min_length=1, max_length=200)
    client_partner_id: TenantId | None = None
    merchant_id: TenantId | None = None
    store_id: TenantId | None = None


class ApiClientOut(BaseModel):
    object: Literal["api_client"] = "api_client"
    id: str = Field(description="The client_id of the HMAC Authorization header")
    name: str
    client_partner_id: int
    merchant_id: int | None
    store_id: int | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, client: ApiClient) -> ApiClientOut:
        return cls(
            id=client.id,
            name=client.name,
            client_partner_id=client.client_partner_id,
            merchant_id=client.merchant_id,
            store_id=client.store_id,
            created_at=client.created_at,
            revoked_at=client.revoked_at,
        )


class ApiClientWithSecret(ApiClientOut):
    client_secret: str = Field(description="Shown once; paymux keeps it sealed")


class ApiClientList(BaseModel):
    data: list[ApiClientOut]
    has_more: bool


class KeyRotated(BaseModel):
    kid: str
