"""PaymentIntent routes (seed 004 endpoint table). Parse, authorise, call the service, serialise."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import AwareDatetime

from paymux.core.errors import problem_responses
from paymux.core.inputs import ID_PATTERN, PrintableQuery
from paymux.core.pagination import Limit, StartingAfter
from paymux.gateway.auth import Caller, Idempotent, container_of
from paymux.gateway.idempotency import Drafted
from paymux.payments.schemas import (
    IntentFilters,
    PaymentIntentCancel,
    PaymentIntentCapture,
    PaymentIntentConfirm,
    PaymentIntentCreate,
    PaymentIntentList,
    PaymentIntentOut,
    RefundCreate,
    TransactionList,
    TransactionOut,
)
from paymux.payments.service import CreatedIntent, PaymentService
from paymux.payments.state import PaymentStatus

router = APIRouter(
    prefix="/v1", tags=["payment intents"], responses=problem_responses(401, 403, 413, 429, 503)
)

IntentId = Annotated[str, Path(pattern=ID_PATTERN, description="A payment intent id, `pi_...`")]
TransactionId = Annotated[str, Path(pattern=ID_PATTERN, description="A transaction id, `txn_...`")]


def _payments(request: Request) -> PaymentService:
    return container_of(request).payments


@router.post(
    "/payment_intents",
    status_code=201,
    response_model=PaymentIntentOut,
    summary="Create a PaymentIntent (server, HMAC)",
    responses=problem_responses(400, 404, 409, 422),
)
async def create_payment_intent(
    request: Request, body: PaymentIntentCreate, caller: Caller, idempotent: Idempotent
) -> Response:
    payments = _payments(request)

    def answer(created: CreatedIntent) -> PaymentIntentOut:
        return PaymentIntentOut.of(
            created.intent, payment_token=created.token.token, expires_at=created.token.expires_at
        )

    async def create() -> PaymentIntentOut:
        return answer(await payments.create(caller, body))

    async def drafted() -> Drafted:
        draft = await payments.draft(caller, body)
        return Drafted(answer(draft.created), draft.rows)

    return await idempotent.run(create, status_code=201, atomic=True, drafted=drafted)


@router.get(
    "/payment_intents",
    response_model=PaymentIntentList,
    summary="List PaymentIntents, newest first (server, HMAC)",
    responses=problem_responses(422),
)
async def list_payment_intents(
    request: Request,
    caller: Caller,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    status: Annotated[PaymentStatus | None, Query()] = None,
    store_id: Annotated[int | None, Query(gt=0, lt=2**53)] = None,
    merchant_id: Annotated[int | None, Query(gt=0, lt=2**53)] = None,
    merchant_ref_id: PrintableQuery = None,
    created_gte: Annotated[
        AwareDatetime | None, Query(description="Created at or after (RFC 3339, with a UTC offset)")
    ] = None,
    created_lte: Annotated[
        AwareDatetime | None, Query(description="Created at or before (RFC 3339, with a UTC offset)")
    ] = None,
) -> PaymentIntentList:
    filters = IntentFilters(
        status=status,
        store_id=store_id,
        merchant_id=merchant_id,
        merchant_ref_id=merchant_ref_id,
        created_gte=created_gte,
        created_lte=created_lte,
    )
    rows, has_more = await _payments(request).list_intents(
        caller, filters, limit=limit, starting_after=starting_after
    )
    return PaymentIntentList(data=[PaymentIntentOut.of(row) for row in rows], has_more=has_more)


@router.get(
    "/payment_intents/{intent_id}",
    response_model=PaymentIntentOut,
    summary="Retrieve a PaymentIntent (SDK with its payment token, or server)",
    responses=problem_responses(404),
)
async def retrieve_payment_intent(request: Request, intent_id: IntentId, caller: Caller) -> PaymentIntentOut:
    return PaymentIntentOut.of(await _payments(request).retrieve(caller, intent_id))


@router.post(
    "/payment_intents/{intent_id}/confirm",
    response_model=PaymentIntentOut,
    summary="Confirm a PaymentIntent (SDK with its payment token, or server)",
    responses=problem_responses(400, 404, 409, 422),
)
async def confirm_payment_intent(
    request: Request,
    intent_id: IntentId,
    caller: Caller,
    idempotent: Idempotent,
    body: Annotated[PaymentIntentConfirm | None, Body()] = None,
) -> Response:
    async def confirm() -> PaymentIntentOut:
        intent = await _payments(request).confirm(caller, intent_id, body or PaymentIntentConfirm())
        return PaymentIntentOut.of(intent)

    return await idempotent.run(confirm)


@router.post(
    "/payment_intents/{intent_id}/cancel",
    response_model=PaymentIntentOut,
    summary="Cancel a PaymentIntent (SDK with its payment token, or server)",
    responses=problem_responses(400, 404, 409, 422),
)
async def cancel_payment_intent(
    request: Request,
    intent_id: IntentId,
    caller: Caller,
    idempotent: Idempotent,
    body: Annotated[PaymentIntentCancel | None, Body()] = None,
) -> Response:
    async def cancel() -> PaymentIntentOut:
        return PaymentIntentOut.of(
            await _payments(request).cancel(caller, intent_id, body or PaymentIntentCancel())
        )

    return await idempotent.run(cancel)


@router.post(
    "/payment_intents/{intent_id}/capture",
    response_model=PaymentIntentOut,
    summary="Record the result of an external or manual payment (server, HMAC)",
    responses=problem_responses(400, 404, 409, 422),
)
async def capture_payment_intent(
    request: Request,
    intent_id: IntentId,
    caller: Caller,
    idempotent: Idempotent,
    body: Annotated[PaymentIntentCapture | None, Body()] = None,
) -> Response:
    async def capture() -> PaymentIntentOut:
        return PaymentIntentOut.of(
            await _payments(request).capture(caller, intent_id, body or PaymentIntentCapture())
        )

    return await idempotent.run(capture)


@router.post(
    "/payment_intents/{intent_id}/refund",
    status_code=201,
    response_model=TransactionOut,
    summary="Refund all or part of a succeeded PaymentIntent (server, HMAC)",
    responses=problem_responses(400, 404, 409, 422),
)
async def refund_payment_intent(
    request: Request,
    intent_id: IntentId,
    caller: Caller,
    idempotent: Idempotent,
    body: Annotated[RefundCreate | None, Body()] = None,
) -> Response:
    async def refund() -> TransactionOut:
        return TransactionOut.of(await _payments(request).refund(caller, intent_id, body or RefundCreate()))

    return await idempotent.run(refund, status_code=201)


@router.get(
    "/payment_intents/{intent_id}/transactions",
    response_model=TransactionList,
    summary="List a PaymentIntent's transactions (SDK with its payment token, or server)",
    responses=problem_responses(404, 422),
)
async def list_intent_transactions(
    request: Request,
    intent_id: IntentId,
    caller: Caller,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> TransactionList:
    rows, has_more = await _payments(request).list_transactions(
        caller, intent_id, limit=limit, starting_after=starting_after
    )
    return TransactionList(data=[TransactionOut.of(row) for row in rows], has_more=has_more)


@router.get(
    "/transactions/{transaction_id}",
    response_model=TransactionOut,
    tags=["transactions"],
    summary="Retrieve a transaction (server, HMAC)",
    responses=problem_responses(404),
)
async def retrieve_transaction(
    request: Request, transaction_id: TransactionId, caller: Caller
) -> TransactionOut:
    return TransactionOut.of(await _payments(request).get_transaction(caller, transaction_id))
