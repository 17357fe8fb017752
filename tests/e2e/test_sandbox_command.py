"""`paymux sandbox --host --port --webhook-base` serves every provider's sandbox under /<provider>."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "paymux", "sandbox", "--host", "127.0.0.1", "--port", str(port),
         "--webhook-base", "http://127.0.0.1:9"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/paypay/v2/codes/payments/x", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "paymux sandbox exited"
                assert time.monotonic() < deadline, "paymux sandbox did not start"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize(
    ("path", "refusal"),
    [
        ("/paypay/v2/codes/payments/x", lambda body: body["resultInfo"]["code"] == "UNAUTHORIZED"),
        ("/linepay/v3/payments/requests/1/check", lambda body: body["returnCode"] == "1106"),
        ("/dpayment/v1/payments/x", lambda body: body["resultInfo"]["code"] == "UNAUTHORIZED"),
        ("/aupay/v1/charges/x", lambda body: body["error"]["code"] == "authentication_failed"),
        ("/rakuten/sandbox/v1/charges?id=x", lambda body: "errors" in body),
    ],
)
def test_each_provider_answers_an_unsigned_call_with_its_own_refusal(
    sandbox_url: str, path: str, refusal: object
) -> None:
    response = httpx.get(sandbox_url + path)
    assert response.status_code == 401, response.text
    assert callable(refusal)
    assert refusal(response.json()), response.text


def test_the_customer_control_endpoint_needs_no_credentials(sandbox_url: str) -> None:
    response = httpx.post(f"{sandbox_url}/paypay/_sandbox/payments/nobody", json={"outcome": "COMPLETED"})
    assert response.status_code == 404
    assert response.json() == {"error": "no such payment"}
