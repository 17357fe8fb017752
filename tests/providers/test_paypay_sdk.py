"""PayPay's official Python SDK (`paypayopa`), pointed at the sandbox with `base_url`, works unchanged: the
sandbox speaks PayPay's protocol, not one of our own making."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import paypayopa

from paymux.providers.paypay.sandbox import DEFAULTS, PayPaySandbox
from tests.live import serving


def sdk_client(base_url: str) -> Any:
    client = paypayopa.Client(
        auth=(DEFAULTS.api_key, DEFAULTS.api_secret), production_mode=False, base_url=base_url
    )
    client.set_assume_merchant(DEFAULTS.merchant_id)
    return client


def scenario(base_url: str, sandbox: PayPaySandbox) -> dict[str, Any]:
    client = sdk_client(base_url)
    created = client.Code.create_qr_code(
        {
            "merchantPaymentId": "sdk-order-1",
            "codeType": "ORDER_QR",
            "amount": {"amount": 1500, "currency": "JPY"},
            "orderDescription": "Mune's Favourite Cake",
            "requestedAt": int(time.time()),
            "isAuthorization": False,
        }
    )
    assert created["resultInfo"]["code"] == "SUCCESS", created
    code_id = created["data"]["codeId"]
    details = client.Code.get_payment_details("sdk-order-1")
    assert details["data"]["status"] == "CREATED"

    payment = sandbox.payments["sdk-order-1"]
    sandbox._settle(payment, "COMPLETED")  # the customer pays
    paid = client.Code.get_payment_details("sdk-order-1")
    assert paid["data"]["status"] == "COMPLETED"

    refund = client.Payment.refund_payment(
        {
            "merchantRefundId": "sdk-refund-1",
            "paymentId": paid["data"]["paymentId"],
            "amount": {"amount": 500, "currency": "JPY"},
            "requestedAt": int(time.time()),
            "reason": "one cake too many",
        }
    )
    assert refund["resultInfo"]["code"] == "SUCCESS", refund
    assert client.Payment.refund_details("sdk-refund-1")["data"]["amount"]["amount"] == 500

    deleted = client.Code.delete_qr_code(code_id)
    assert deleted["resultInfo"]["code"] == "SUCCESS", deleted
    wrong = paypayopa.Client(
        auth=(DEFAULTS.api_key, "wrong secret"), production_mode=False, base_url=base_url
    )
    wrong.set_assume_merchant(DEFAULTS.merchant_id)
    refused = wrong.Code.get_payment_details("sdk-order-1")
    return {"refused": refused}


async def test_paypays_python_sdk_runs_against_the_sandbox() -> None:
    sandbox = PayPaySandbox()
    async with serving(sandbox.app()) as base_url:
        outcome = await asyncio.to_thread(scenario, base_url, sandbox)
    assert outcome["refused"]["resultInfo"]["code"] == "UNAUTHORIZED"
    assert sandbox.payments["sdk-order-1"].status == "COMPLETED"
    assert [refund["merchantRefundId"] for refund in sandbox.payments["sdk-order-1"].refunds] == [
        "sdk-refund-1"
    ]
