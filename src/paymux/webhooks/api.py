"""Webhook endpoints of a merchant (HMAC), their deliveries, and redelivery of events."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from paymux.core.errors import problem_responses
from paymux.core.inputs import ID_PATTERN, ObjectId
from paymux.core.pagination import Limit, StartingAfter
from paymux.gateway.auth import Caller, Idempotent, container_of
from paymux.webhooks.schemas import (
    DeliveryList,
    DeliveryOut,
    RedeliverRequest,
    SecretRotation,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
)
from paymux.webhooks.service import WebhookService

router = APIRouter(prefix="/v1", tags=["webhooks"], responses=problem_responses(401, 403, 413, 429, 503))


class ReturnResult(BaseModel):
    payment_intent_id: str
    status: str


EndpointId = Annotated[str, Path(pattern=ID_PATTERN, description="A webhook endpoint id, `we_...`")]


def _webhooks(request: Request) -> WebhookService:
    return container_of(request).webhooks


@router.post(
    "/webhook_endpoints",
    status_code=201,
    response_model=WebhookEndpointOut,
    summary="Register a webhook endpoint; the answer shows its signing secret, once",
    responses=problem_responses(400, 403, 409, 422),
)
async def create_endpoint(
    request: Request, body: WebhookEndpointCreate, caller: Caller, idempotent: Idempotent
) -> Response:
    async def create() -> WebhookEndpointOut:
        created = await _webhooks(request).create(caller, body)
        return WebhookEndpointOut.of(created.endpoint, secret=created.secret)

    return await idempotent.run(create, status_code=201)


@router.get(
    "/webhook_endpoints",
    response_model=WebhookEndpointList,
    summary="List webhook endpoints",
    responses=problem_responses(403, 422),
)
async def list_endpoints(
    request: Request, caller: Caller, limit: Limit = 10, starting_after: StartingAfter = None
) -> WebhookEndpointList:
    rows, has_more = await _webhooks(request).list_endpoints(
        caller, limit=limit, starting_after=starting_after
    )
    return WebhookEndpointList(data=[WebhookEndpointOut.of(row) for row in rows], has_more=has_more)


@router.get(
    "/webhook_endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    summary="Retrieve a webhook endpoint",
    responses=problem_responses(403, 404),
)
async def retrieve_endpoint(request: Request, endpoint_id: EndpointId, caller: Caller) -> WebhookEndpointOut:
    return WebhookEndpointOut.of(await _webhooks(request).get(caller, endpoint_id))


@router.patch(
    "/webhook_endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    summary="Change a webhook endpoint's URL, events, description, or enable it again",
    responses=problem_responses(400, 403, 404, 422),
)
async def update_endpoint(
    request: Request, endpoint_id: EndpointId, body: WebhookEndpointUpdate, caller: Caller
) -> WebhookEndpointOut:
    return WebhookEndpointOut.of(await _webhooks(request).update(caller, endpoint_id, body))


@router.delete(
    "/webhook_endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    summary="Delete a webhook endpoint; its pending deliveries go to the dead-letter state",
    responses=problem_responses(403, 404),
)
async def delete_endpoint(request: Request, endpoint_id: EndpointId, caller: Caller) -> WebhookEndpointOut:
    return WebhookEndpointOut.of(await _webhooks(request).delete(caller, endpoint_id))


@router.post(
    "/webhook_endpoints/{endpoint_id}/rotate_secret",
    response_model=WebhookEndpointOut,
    summary="New signing secret; the previous one keeps signing too until it expires (24 h by default)",
    responses=problem_responses(400, 403, 404, 409, 422),
)
async def rotate_secret(
    request: Request,
    endpoint_id: EndpointId,
    caller: Caller,
    idempotent: Idempotent,
    body: Annotated[SecretRotation | None, Body()] = None,
) -> Response:
    rotation = body or SecretRotation()

    async def rotate() -> WebhookEndpointOut:
        rotated = await _webhooks(request).rotate_secret(
            caller, endpoint_id, expire_previous_in=timedelta(hours=rotation.expire_previous_in_hours)
        )
        return WebhookEndpointOut.of(rotated.endpoint, secret=rotated.secret)

    return await idempotent.run(rotate)


@router.get(
    "/webhook_endpoints/{endpoint_id}/deliveries",
    response_model=DeliveryList,
    summary="Deliveries to an endpoint, newest first, each with its attempts",
    responses=problem_responses(403, 404, 422),
)
async def list_deliveries(
    request: Request,
    endpoint_id: EndpointId,
    caller: Caller,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> DeliveryList:
    rows, has_more = await _webhooks(request).list_deliveries(
        caller, endpoint_id, limit=limit, starting_after=starting_after
    )
    return DeliveryList(
        data=[DeliveryOut.of(delivery, attempts) for delivery, attempts in rows], has_more=has_more
    )


@router.post(
    "/events/{event_id}/redeliver",
    response_model=DeliveryList,
    tags=["events"],
    summary="Send an event again (from the dead-letter state, or on demand)",
    responses=problem_responses(400, 403, 404, 409, 422),
)
async def redeliver_event(
    request: Request,
    event_id: ObjectId,
    caller: Caller,
    idempotent: Idempotent,
    body: Annotated[RedeliverRequest | None, Body()] = None,
) -> Response:
    async def redeliver() -> DeliveryList:
        deliveries = await _webhooks(request).redeliver(
            caller, event_id, (body or RedeliverRequest()).endpoint_id
        )
        return DeliveryList(data=[DeliveryOut.of(delivery, []) for delivery in deliveries], has_more=False)

    return await idempotent.run(redeliver)


@router.get(
    "/webhooks/{provider}/return",
    tags=["provider webhooks"],
    summary="Where a provider sends the customer's browser back (LINE Pay's confirmUrl); checks the payment",
    responses=problem_responses(404, 422),
)
async def provider_return(
    request: Request,
    provider: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,32}$")],
    order_id: Annotated[str, Query(alias="orderId", pattern=ID_PATTERN)],
) -> ReturnResult:
    """The customer approved (or cancelled) at the provider; the status check decides, as with webhooks."""
    intent = await container_of(request).inbound_webhooks.returned(provider, order_id)
    return ReturnResult(payment_intent_id=intent.id, status=intent.status)


@router.post(
    "/webhooks/{provider}",
    tags=["provider webhooks"],
    summary="Notifications from a payment provider (signed by the provider)",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "Received (or a duplicate, ignored)", "content": {"text/plain": {}}},
        **problem_responses(400, 401, 404),
    },
)
async def provider_webhook(
    request: Request,
    provider: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,32}$")],
    background: BackgroundTasks,
) -> PlainTextResponse:
    inbound = container_of(request).inbound_webhooks
    signature_header = inbound.provider(provider).signature_header
    intent_id = await inbound.receive(provider, await request.body(), request.headers.get(signature_header))
    if intent_id is not None:
        background.add_task(inbound.settle, intent_id)  # after the answer: the provider waits for nobody
    return PlainTextResponse("OK")
