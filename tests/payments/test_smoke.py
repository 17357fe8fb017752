from __future__ import annotations

from tests.support import ServerClient, Tenant, bearer


async def test_create_confirm_refund_through_the_api(server: ServerClient, tenant: Tenant) -> None:
    intent = await server.create_intent(tenant, amount=1500)
    assert intent["status"] == "requires_payment_method"
    confirmed = await server.http.post(
        f"/v1/payment_intents/{intent['id']}/confirm", headers=bearer(intent["payment_token"])
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"
    refund = await server.post(f"/v1/payment_intents/{intent['id']}/refund", {"amount": 500})
    assert refund.status_code == 201, refund.text
    assert refund.json()["status"] == "succeeded"
