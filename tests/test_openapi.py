"""The OpenAPI document describes the API truthfully: schemathesis drives every operation of it against a real
server with signed requests, and no answer is a 5xx or breaks the document's own schemas."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from paymux.core.db import Database
from paymux.gateway.hmac_signing import authorization_header
from tests.conftest import ON_POSTGRES, REDIS_URL, TEST_MASTER_KEY, empty_all_tables

GENEROUS_LIMIT = "1000000/minute"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    def __init__(self, base_url: str, client_id: str, secret: str) -> None:
        self.base_url = base_url
        self.client_id = client_id
        self.secret = secret


@pytest.fixture(scope="module")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("live")
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")},
        "PAYMUX_DATABASE_URL": database_url,
        "PAYMUX_MASTER_KEY": TEST_MASTER_KEY,
        "PAYMUX_LOG_LEVEL": "WARNING",
        **{f"PAYMUX_RATELIMIT_{kind}": GENEROUS_LIMIT for kind in ("MERCHANT", "STORE", "IP", "GLOBAL")},
    }
    if ON_POSTGRES and REDIS_URL:
        env["PAYMUX_REDIS_URL"] = REDIS_URL
    bootstrap = subprocess.run(
        [sys.executable, "-m", "paymux", "tenants", "bootstrap", "--partner", "spec", "--merchant", "SPEC-1",
         "--store", "SPEC-S1", "--test-provider", "--json"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    tenant = json.loads(bootstrap.stdout)
    port = _free_port()
    log = (workdir / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "paymux", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail((workdir / "server.log").read_text())
                time.sleep(0.2)
        yield LiveServer(base_url, tenant["client_id"], tenant["client_secret"])
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        server_log = (workdir / "server.log").read_text()
        asyncio.run(_empty(database_url))
        assert "Traceback" not in server_log, server_log


async def _empty(url: str) -> None:
    db = Database(url)
    try:
        await empty_all_tables(db)
    finally:
        await db.dispose()


class HmacAuth(requests.auth.AuthBase):
    """Signs the request exactly as it will be sent: path with query string, raw body bytes."""

    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id = client_id
        self.secret = secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        path = urlsplit(request.url or "")
        signed_path = path.path + (f"?{path.query}" if path.query else "")
        request.headers["Authorization"] = authorization_header(
            self.client_id, self.secret, request.method or "GET", signed_path, int(time.time()), body
        )
        return request


@pytest.fixture(scope="module")
def api_schema(live_server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

OPERATIONS = [
    ("POST", "/v1/payment_intents"),
    ("GET", "/v1/payment_intents"),
    ("GET", "/v1/payment_intents/{intent_id}"),
    ("POST", "/v1/payment_intents/{intent_id}/confirm"),
    ("POST", "/v1/payment_intents/{intent_id}/cancel"),
    ("POST", "/v1/payment_intents/{intent_id}/capture"),
    ("POST", "/v1/payment_intents/{intent_id}/refund"),
    ("GET", "/v1/payment_intents/{intent_id}/transactions"),
    ("GET", "/v1/transactions/{transaction_id}"),
    ("POST", "/v1/sync/merchants"),
    ("GET", "/v1/stores/{store_id}/provider_configs"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/{event_id}"),
    ("POST", "/v1/events/{event_id}/redeliver"),
    ("GET", "/v1/balances"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/impersonate"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/api/v1/merchants"),
    ("GET", "/v1/balance_transactions"),
    ("POST", "/v1/reconciliation_runs"),
    ("GET", "/v1/reconciliation_runs"),
    ("GET", "/v1/reconciliation_runs/{run_id}"),
    ("GET", "/v1/reconciliation_runs/{run_id}/exceptions"),
    ("POST", "/v1/reconciliation_exceptions/{exception_id}/resolve"),
    ("POST", "/v1/webhook_endpoints"),
    ("GET", "/v1/webhook_endpoints"),
    ("GET", "/v1/webhook_endpoints/{endpoint_id}"),
    ("PATCH", "/v1/webhook_endpoints/{endpoint_id}"),
    ("DELETE", "/v1/webhook_endpoints/{endpoint_id}"),
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"),
    ("GET", "/v1/webhook_endpoints/{endpoint_id}/deliveries"),
    ("POST", "/v1/webhooks/{provider}"),
    ("GET", "/v1/webhooks/{provider}/return"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/auth/device/token"),
    ("GET", "/api/v1/partners"),
    ("POST", "/api/v1/partners"),
    ("GET", "/api/v1/partners/{partner_id}"),
    ("POST", "/api/v1/merchants"),
    ("GET", "/api/v1/merchants/{merchant_id}"),
    ("PATCH", "/api/v1/merchants/{merchant_id}"),
    ("GET", "/api/v1/stores"),
    ("POST", "/api/v1/stores"),
    ("GET", "/api/v1/stores/{store_id}"),
    ("PATCH", "/api/v1/stores/{store_id}"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users/{user_id}"),
    ("PATCH", "/api/v1/users/{user_id}"),
    ("GET", "/api/v1/api_clients"),
    ("POST", "/api/v1/api_clients"),
    ("GET", "/api/v1/api_clients/{client_id}"),
    ("POST", "/api/v1/api_clients/{client_id}/rotate_secret"),
    ("POST", "/api/v1/api_clients/{client_id}/revoke"),
    ("GET", "/api/v1/devices"),
    ("POST", "/api/v1/devices"),
    ("GET", "/api/v1/devices/{device_id}"),
    ("POST", "/api/v1/devices/{device_id}/revoke"),
    ("POST", "/api/v1/signing_keys/rotate"),
    ("GET", "/api/v1/audit_events"),
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_conforms_to_the_document(
    api_schema: Any, live_server: LiveServer, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    session = requests.Session()
    session.auth = HmacAuth(live_server.client_id, live_server.secret)

    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def conforms(case: Any) -> None:
        case.call_and_validate(base_url=live_server.base_url, session=session, checks=CHECKS)

    conforms()


def test_every_route_is_in_the_document(live_server: LiveServer) -> None:
    document = httpx.get(f"{live_server.base_url}/openapi.json").json()
    paths = document["paths"]
    expected = {
        ("post", "/v1/payment_intents"),
        ("get", "/v1/payment_intents"),
        ("get", "/v1/payment_intents/{intent_id}"),
        ("post", "/v1/payment_intents/{intent_id}/confirm"),
        ("post", "/v1/payment_intents/{intent_id}/cancel"),
        ("post", "/v1/payment_intents/{intent_id}/capture"),
        ("post", "/v1/payment_intents/{intent_id}/refund"),
        ("get", "/v1/payment_intents/{intent_id}/transactions"),
        ("get", "/v1/transactions/{transaction_id}"),
        ("post", "/v1/sync/merchants"),
        ("get", "/v1/stores/{store_id}/provider_configs"),
    }
    assert expected <= {(method, path) for path, item in paths.items() for method in item}
    assert {(method.lower(), path) for method, path in OPERATIONS} == {
        (method, path) for path, item in paths.items() for method in item
    }, "an operation of the document is not exercised by the schemathesis test"
    assert document["openapi"].startswith("3.1")
    assert {"HMAC", "PaymentToken", "UserJWT", "DeviceJWT"} <= set(document["components"]["securitySchemes"])
    for path, item in paths.items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if path == "/auth/device/token" and status in {"400", "401"}:
                    # RFC 6749 section 5.2 errors are application/json with `error`; paymux adds problem members
                    assert "application/json" in response["content"], (method, path, status)
                elif status.isdigit() and int(status) >= 400:
                    assert "application/problem+json" in response.get("content", {}), (method, path, status)


def test_docs_page_serves_its_assets_locally(live_server: LiveServer) -> None:
    page = httpx.get(f"{live_server.base_url}/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        src = next(part for part in page.text.split('"') if part.endswith(asset))
        assert httpx.get(f"{live_server.base_url}{src}").status_code == 200
