"""The PaymentIntent state machine as a pure transition table (seed 004, plus `requires_capture`).

    requires_payment_method --> requires_action --> processing --> succeeded
              |                       |                 |
              +-----------------------+-----------------+--> failed
              |                       |
              +-----------------------+------------------> cancelled

`requires_capture` is paymux's addition for intents processed outside paymux (processing_mode `external` or
`manual`): confirm hands the intent to the terminal or cashier, and capture records their result. Such an
intent may also be captured straight from `requires_payment_method`, when the payment was taken before paymux
heard of it. Succeeded, failed and cancelled are terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class PaymentStatus(StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = PaymentStatus

TRANSITIONS: Final[Mapping[PaymentStatus, frozenset[PaymentStatus]]] = {
    S.REQUIRES_PAYMENT_METHOD: frozenset(
        {S.REQUIRES_ACTION, S.PROCESSING, S.REQUIRES_CAPTURE, S.SUCCEEDED, S.FAILED, S.CANCELLED}
    ),
    S.REQUIRES_ACTION: frozenset({S.PROCESSING, S.FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.SUCCEEDED, S.FAILED}),
    S.REQUIRES_CAPTURE: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

TERMINAL: Final[frozenset[PaymentStatus]] = frozenset(
    status for status, nexts in TRANSITIONS.items() if not nexts
)


def can_transition(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in TRANSITIONS[current]


def is_terminal(status: PaymentStatus) -> bool:
    return status in TERMINAL


def event_type_for(status: PaymentStatus) -> str:
    """The outbox event a transition into `status` emits."""
    return f"payment_intent.{status.value}"
