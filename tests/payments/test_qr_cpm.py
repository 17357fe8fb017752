from __future__ import annotations

from tests.support import ServerClient, Tenant


async def test_a_customer_presented_payment_needs_the_scanned_code(
    server: ServerClient, tenant: Tenant
) -> None:
    intent = await server.create_intent(tenant, payment_method_type="qr_cpm")
    response = await server.post(f"/v1/payment_intents/{intent['id']}/confirm", {})
    assert response.status_code == 422
    assert response.json()["code"] == "customer_code_required"
    unchanged = await server.get(f"/v1/payment_intents/{intent['id']}")
    assert unchanged.json()["status"] == "requires_payment_method"
