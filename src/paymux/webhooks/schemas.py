from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from paymux.core.inputs import InputModel
from paymux.core.pagination import Page
from paymux.events.catalogue import ALL_EVENTS, EVENT_TYPES
from paymux.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

EndpointURL = Annotated[
    str, Field(min_length=8, max_length=2048, examples=["https://merchant.example/paymux/webhooks"])
]
Description = Annotated[str, Field(max_length=500)]


def _known_events(events: list[str]) -> list[str]:
    unknown = [event for event in events if event != ALL_EVENTS and event not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event types {unknown}; use '*' or some of {list(EVENT_TYPES)}")
    return sorted(set(events))


EventSelection = Annotated[
    list[Annotated[str, Field(max_length=64)]],
    Field(
        min_length=1, max_length=len(EVENT_TYPES) + 1, description="Event types to receive, or ['*'] for all"
    ),
]


class WebhookEndpointCreate(InputModel):
    url: EndpointURL
    events: EventSelection = Field(default_factory=lambda: [ALL_EVENTS])
    enabled: bool = True
    description: Description | None = None
    merchant_id: Annotated[int, Field(strict=True, gt=0, lt=2**53)] | None = Field(
        default=None, description="Required for partner-scoped clients; implied for merchant-scoped ones"
    )

    _events = field_validator("events")(_known_events)


class WebhookEndpointUpdate(InputModel):
    url: EndpointURL | None = None
    events: EventSelection | None = None
    enabled: bool | None = None
    description: Description | None = None

    @field_validator("events")
    @classmethod
    def _events(cls, events: list[str] | None) -> list[str] | None:
        return None if events is None else _known_events(events)


class SecretRotation(InputModel):
    expire_previous_in_hours: int = Field(
        default=24, ge=0, le=168, description="How long the previous secret keeps signing (0: stop at once)"
    )


class WebhookEndpointOut(BaseModel):
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    client_partner_id: int
    merchant_id: int
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    description: str | None
    secret: str | None = Field(default=None, description="The signing secret: only when created or rotated")
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint, *, secret: str | None = None) -> WebhookEndpointOut:
        return cls(
            id=endpoint.id,
            client_partner_id=endpoint.client_partner_id,
            merchant_id=endpoint.merchant_id,
            url=endpoint.url,
            events=list(endpoint.events),
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            description=endpoint.description,
            secret=secret,
            previous_secret_expires_at=endpoint.previous_secret_expires_at,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


class WebhookEndpointList(Page[WebhookEndpointOut]):
    pass


class AttemptOut(BaseModel):
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    latency_ms: int
    error: str | None

    @classmethod
    def of(cls, attempt: WebhookAttempt) -> AttemptOut:
        return cls(
            attempted_at=attempt.attempted_at,
            succeeded=attempt.succeeded,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
        )


class DeliveryOut(BaseModel):
    object: Literal["webhook_delivery"] = "webhook_delivery"
    id: str
    endpoint_id: str
    event_id: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    dead_reason: str | None
    created_at: datetime
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryOut:
        return cls(
            id=delivery.id,
            endpoint_id=delivery.endpoint_id,
            event_id=delivery.event_id,
            status=DeliveryStatus(delivery.status),
            attempt_count=delivery.attempt_count,
            next_attempt_at=delivery.next_attempt_at,
            delivered_at=delivery.delivered_at,
            dead_reason=delivery.dead_reason,
            created_at=delivery.created_at,
            attempts=[AttemptOut.of(attempt) for attempt in attempts],
        )


class DeliveryList(Page[DeliveryOut]):
    pass


class RedeliverRequest(InputModel):
    endpoint_id: Annotated[str, Field(max_length=64)] | None = Field(
        default=None,
        description="Only to this endpoint; default every enabled endpoint subscribed to the event",
    )
