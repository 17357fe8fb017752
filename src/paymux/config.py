"""Settings, read from `PAYMUX_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from limits import parse as parse_rate_limit
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paymux.core.db import DatabaseURLError, to_async_url


class Settings(BaseSettings):
    """Every knob of a paymux process. The defaults run the embedded single-process setup."""

    model_config = SettingsConfigDict(env_prefix="PAYMUX_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite:///var/paymux.db",
        description="Plain database URL: sqlite:///path/paymux.db or postgresql://user@host/db; "
        "paymux chooses the async driver.",
    )
    database_pool_size: int = Field(default=20, ge=1, description="PostgreSQL connections kept per process.")
    database_max_overflow: int = Field(
        default=10,
        ge=0,
        description="Connections opened beyond the pool under a burst, closed when returned.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for shared rate limits and replay caches. Unset: in-process (one process only).",
    )
    master_key: SecretStr | None = Field(
        default=None,
        description="Base64 of the 32-byte key-encryption key. Unset: read (or create) master_key_file.",
    )
    master_key_file: Path = Field(
        default=Path("var/master.key"), description="Where the generated KEK lives."
    )

    hmac_tolerance_seconds: int = Field(
        default=300, ge=1, description="Allowed clock skew of HMAC timestamps."
    )
    payment_token_ttl_seconds: int = Field(default=300, ge=1, description="Lifetime of a payment_token.")
    idempotency_ttl_hours: int = Field(default=24, ge=1, description="How long an Idempotency-Key is kept.")
    idempotency_lock_seconds: int = Field(
        default=60,
        ge=1,
        description="After this long an unfinished request's key may be taken over by a retry.",
    )
    provider_timeout_seconds: float = Field(
        default=45.0,
        gt=0,
        description="Deadline of one provider call; past it the outcome counts as unknown.",
    )
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Larger request bodies get 413.")
    jwt_audience: str = Field(
        default="paymux", min_length=1, description="The aud claim of user access tokens."
    )
    access_token_ttl_seconds: int = Field(
        default=900, ge=60, le=3600, description="Lifetime of a user access token."
    )
    refresh_token_ttl_seconds: int = Field(
        default=30 * 24 * 3600, ge=300, description="Lifetime of a refresh token (each use gives a new one)."
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="Wrong passwords in a row that lock a user account."
    )
    password_hash_time_cost: int = Field(
        default=3, ge=1, description="argon2id iterations for user passwords (RFC 9106's low-memory profile)."
    )
    password_hash_memory_kib: int = Field(
        default=65536, ge=1024, description="argon2id memory per password hash, in KiB (64 MiB)."
    )
    login_lockout_seconds: int = Field(
        default=900, ge=1, description="How long a locked account stays locked."
    )
    reconciliation_max_upload_bytes: int = Field(
        default=64 * 1_048_576,
        ge=1024,
        description="Largest settlement file POST /v1/reconciliation_runs takes; larger files go through the CLI.",
    )
    reconciliation_daily: bool = Field(
        default=True,
        description="The worker fetches and reconciles yesterday's settlement file of providers that offer one.",
    )
    ledger_hold_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long a payment's pending hold lasts before the worker releases it.",
    )

    ratelimit_enabled: bool = True
    ratelimit_merchant: str = Field(default="1000/minute", description="Requests per merchant.")
    ratelimit_store: str = Field(default="500/minute", description="Requests per store.")
    ratelimit_ip: str = Field(
        default="100/minute", description="Requests per client IP, for callers that are not signed servers."
    )
    ratelimit_global: str = Field(default="10000/minute", description="Requests across all callers.")

    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses whose X-Forwarded-For is believed when finding the client IP.",
    )
    webhooks_allow_private: bool = Field(
        default=False,
        description="Allow http:// and private or loopback webhook addresses (development and tests only).",
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="Deadline of one webhook request.")
    webhook_lease_seconds: int = Field(
        default=30, ge=1, description="How long a worker holds an endpoint before another may take it over."
    )
    worker_poll_seconds: float = Field(default=0.5, gt=0, description="How long an idle worker waits.")
    worker_batch_seconds: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description="How long a woken worker lets events gather before it relays them, so that a steady stream "
        "is relayed in batches rather than one round per commit.",
    )
    http_keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        description="How long `paymux serve` keeps an idle client connection open; longer than the idle timeout "
        "of the load balancer or client in front, so that it never reuses a connection the server is closing.",
    )
    embedded_worker: bool = Field(
        default=False,
        description="Run the worker inside `paymux serve` (one process; `paymux demo` sets it).",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="paymux's address as customers' browsers reach it (LINE Pay returns the customer here).",
    )
    mount_sandboxes: bool = Field(
        default=False,
        description="Serve the provider sandboxes under /<provider> too (`paymux demo` sets it).",
    )
    sandbox_webhook_base: str | None = Field(
        default=None, description="Where mounted sandboxes send webhooks: this server's own base URL."
    )
    log_level: str = "INFO"
    log_json: bool = Field(default=False, description="JSON log lines instead of the console renderer.")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        try:
            to_async_url(value)
        except DatabaseURLError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("ratelimit_merchant", "ratelimit_store", "ratelimit_ip", "ratelimit_global")
    @classmethod
    def _rate_limit_syntax(cls, value: str) -> str:
        try:
            parse_rate_limit(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate limit such as '100/minute'") from exc
        return value
