"""A NUL character anywhere in a request is a 422, never a database error (PostgreSQL cannot store one)."""

from __future__ import annotations

import pytest

from tests.support import ServerClient, Tenant, intent_body


@pytest.mark.parametrize(
    "path",
    [
        "/v1/payment_intents?merchant_ref_id=%00",
        "/v1/payment_intents/pi_%00",
        "/v1/payment_intents/pi_%00/transactions",
        "/v1/transactions/txn_%00",
        "/v1/events?type=%00",
        "/v1/events?object_id=a%00",
        "/v1/events/evt_%00",
        "/v1/webhook_endpoints/we_%00",
        "/v1/payment_intents?starting_after=pi_%00",
        "/v1/events?starting_after=evt_%00",
        "/v1/webhook_endpoints?starting_after=we_%00",
    ],
)
async def test_nul_in_path_or_query(server: ServerClient, path: str) -> None:
    response = await server.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "overrides",
    [{"metadata": {"note": "a\u0000b"}}, {"metadata": {"k\u0000": "v"}}, {"order_id": "A\u0000"}],
)
async def test_nul_in_a_body(server: ServerClient, tenant: Tenant, overrides: dict[str, object]) -> None:
    response = await server.post("/v1/payment_intents", intent_body(tenant, **overrides))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"


async def test_nul_in_a_webhook_endpoint_description(server: ServerClient) -> None:
    response = await server.post(
        "/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/hook", "description": "x\u0000"}
    )
    assert response.json()["code"] == "validation_error"
