"""Helpers for tests: tenant factories, clients that speak paymux's auth schemes, and checks of the answers."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import httpx

from paymux.container import Container
from paymux.core.clock import Clock
from paymux.gateway.hmac_signing import authorization_header

_refs = itertools.count(1)

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Tenant:
    client_partner_id: int
    merchant_id: int
    store_id: int
    client_id: str
    client_secret: str


async def bootstrap_tenant(
    container: Container, *, partner: str, merchant: str, store: str, test_provider: bool = True
) -> Tenant:
    result = await container.tenants.bootstrap(
        partner_name=partner, merchant_code=merchant, store_code=store, test_provider=test_provider
    )
    return Tenant(
        client_partner_id=result.client_partner_id,
        merchant_id=result.merchant_id,
        store_id=result.store_id,
        client_id=result.client_id,
        client_secret=result.client_secret,
    )


def encode(body: Any) -> bytes:
    return b"" if body is None else json.dumps(body, separators=(",", ":")).encode()


class ServerClient:
    """A merchant server: signs each request with HMAC-SHA256 over METHOD:PATH:timestamp:body."""

    def __init__(self, http: httpx.AsyncClient, client_id: str, secret: str, clock: Clock) -> None:
        self.http = http
        self.client_id = client_id
        self.secret = secret
        self.clock = clock

    def authorization(
        self, method: str, path: str, body: bytes = b"", *, timestamp: int | None = None
    ) -> str:
        ts = int(self.clock.now().timestamp()) if timestamp is None else timestamp
        return authorization_header(self.client_id, self.secret, method, path, ts, body)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        timestamp: int | None = None,
    ) -> httpx.Response:
        content = raw if raw is not None else encode(body)
        sent = {"Authorization": self.authorization(method, path, content, timestamp=timestamp)}
        if content:
            sent["Content-Type"] = "application/json"
        if idempotency_key is not None:
            sent["Idempotency-Key"] = idempotency_key
        sent.update(headers or {})
        return await self.http.request(method, path, content=content, headers=sent)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, body, **kwargs)

    async def create_intent(self, tenant: Tenant, **overrides: Any) -> dict[str, Any]:
        """Create an intent and return its JSON; fails the test unless it is created."""
        response = await self.post("/v1/payment_intents", intent_body(tenant, **overrides))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


def intent_body(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_ref_id": f"REF-{next(_refs)}",
        "amount": 1000,
        "currency": "JPY",
        "store_id": tenant.store_id,
        "payment_method_type": "credit_card",
        "processing_mode": "pgw_processed",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The JSON body of a response of `status`; fails the test on any other status."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The body of an RFC 9457 problem+json response of `status` and paymux error `code`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body
