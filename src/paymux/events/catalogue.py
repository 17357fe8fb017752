"""Every event type paymux emits. Webhook endpoints subscribe to these, or to `*` for all."""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = (
    "payment_intent.created",
    "payment_intent.requires_action",
    "payment_intent.processing",
    "payment_intent.requires_capture",
    "payment_intent.succeeded",
    "payment_intent.failed",
    "payment_intent.cancelled",
    "refund.succeeded",
    "refund.failed",
)
ALL_EVENTS = "*"


def subscribes(subscribed: list[str], event_type: str) -> bool:
    return ALL_EVENTS in subscribed or event_type in subscribed
