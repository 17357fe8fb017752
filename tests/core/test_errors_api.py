"""Every error is an RFC 9457 problem+json document with a stable `code`, and every response carries an
X-Request-Id that matches the `request_id` of its problem body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support import ServerClient, Tenant, intent_body

PROBLEM_JSON = "application/problem+json"
MIB = 1024 * 1024


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem: dict[str, Any] = response.json()
    assert {"type", "title", "status", "code", "request_id"} <= set(problem)
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"urn:paymux:problem:{code}"
    assert isinstance(problem["title"], str)
    assert problem["title"]
    assert isinstance(problem["request_id"], str)
    assert problem["request_id"]
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


def oversized_refund_body() -> bytes:
    body = json.dumps({"reason": "x" * (MIB + 16)}).encode()
    assert len(body) > MIB
    return body


# ---------------------------------------------------------------------------------------------- framework errors


@pytest.mark.parametrize(
    "path", ["/nope", "/v1/nope", "/v1/payment_intents/pi_x/nope", "/v2/payment_intents"]
)
async def test_unknown_route_is_404_not_found(http: httpx.AsyncClient, path: str) -> None:
    assert_problem(await http.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/payment_intents"),
        ("PUT", "/v1/payment_intents"),
        ("GET", "/v1/payment_intents/pi_x/confirm"),
        ("PATCH", "/v1/payment_intents/pi_x/refund"),
        ("POST", "/v1/transactions/txn_x"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405_method_not_allowed(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await http.request(method, path)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"]
    assert method not in response.headers["allow"].split(", ")


@pytest.mark.parametrize(
    "raw",
    [b'{"amount": ', b"{amount: 1}", b"not json", b'{"amount": 1,}', b"\xff\xfe"],
    ids=["truncated", "bare_key", "text", "trailing_comma", "not_utf8"],
)
async def test_malformed_json_body_is_422(server: ServerClient, tenant: Tenant, raw: bytes) -> None:
    problem = assert_problem(await server.post("/v1/payment_intents", raw=raw), 422, "validation_error")
    assert problem["errors"]
    assert problem["errors"][0]["loc"][0] == "body"
    assert {"loc", "msg", "type"} <= set(problem["errors"][0])


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null"])
async def test_json_body_that_is_not_an_object_is_422(
    server: ServerClient, tenant: Tenant, raw: bytes
) -> None:
    problem = assert_problem(await server.post("/v1/payment_intents", raw=raw), 422, "validation_error")
    assert problem["errors"]


async def test_unknown_field_is_422(server: ServerClient, tenant: Tenant) -> None:
    body = {**intent_body(tenant), "surprise": "field"}
    problem = assert_problem(await server.post("/v1/payment_intents", body), 422, "validation_error")
    assert [(issue["loc"], issue["type"]) for issue in problem["errors"]] == [
        (["body", "surprise"], "extra_forbidden")
    ]
    assert problem["detail"]
    listed = await server.get("/v1/payment_intents")
    assert listed.json()["data"] == []


@pytest.mark.parametrize("operation", ["confirm", "cancel", "capture", "refund"])
async def test_unknown_field_in_an_operation_body_is_422(
    server: ServerClient, tenant: Tenant, operation: str
) -> None:
    created = await server.create_intent(tenant, processing_mode="external")
    response = await server.post(f"/v1/payment_intents/{created['id']}/{operation}", {"surprise": 1})
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["loc"] == ["body", "surprise"]


async def test_validation_problem_lists_every_issue(server: ServerClient, tenant: Tenant) -> None:
    body = intent_body(tenant, amount=-1, currency="jpy", payment_method_type="cheque")
    problem = assert_problem(await server.post("/v1/payment_intents", body), 422, "validation_error")
    assert sorted(issue["loc"][-1] for issue in problem["errors"]) == [
        "amount",
        "currency",
        "payment_method_type",
    ]


# ---------------------------------------------------------------------------------------------- body size


@pytest.mark.parametrize("signed", [True, False])
async def test_body_over_one_mib_is_413(
    server: ServerClient, tenant: Tenant, http: httpx.AsyncClient, signed: bool
) -> None:
    created = await server.create_intent(tenant)
    path = f"/v1/payment_intents/{created['id']}/refund"
    raw = oversized_refund_body()
    if signed:
        response = await server.post(path, raw=raw)
    else:
        response = await http.post(path, content=raw, headers={"Content-Type": "application/json"})
    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["detail"]
    after = await server.get(f"/v1/payment_intents/{created['id']}")
    assert after.json()["status"] == "requires_payment_method"


async def test_body_of_exactly_the_limit_is_not_413(server: ServerClient, tenant: Tenant) -> None:
    body = intent_body(tenant)
    encoded = json.dumps(body, separators=(",", ":")).encode()
    padding = MIB - len(encoded)
    raw = encoded[:-1] + b" " * padding + b"}"
    assert len(raw) == MIB
    response = await server.post("/v1/payment_intents", raw=raw)
    assert response.status_code == 201, response.text


async def test_chunked_body_over_one_mib_is_413(
    server: ServerClient, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    created = await server.create_intent(tenant)
    path = f"/v1/payment_intents/{created['id']}/refund"
    raw = oversized_refund_body()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 64 * 1024):
            yield raw[start : start + 64 * 1024]

    headers = {"Authorization": server.authorization("POST", path, raw), "Content-Type": "application/json"}
    response = await http.post(path, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")


# ---------------------------------------------------------------------------------------------- domain errors


async def test_missing_credentials_is_401_problem(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/payment_intents")
    assert_problem(response, 401, "missing_credentials")
    assert response.headers["www-authenticate"]


async def test_unknown_intent_is_404_problem(server: ServerClient, tenant: Tenant) -> None:
    response = await server.get("/v1/payment_intents/pi_01HXYZNOSUCHINTENT00000000")
    assert_problem(response, 404, "payment_intent_not_found")


async def test_conflict_problem_carries_extra_members(server: ServerClient, tenant: Tenant) -> None:
    created = await server.create_intent(tenant)
    response = await server.post(f"/v1/payment_intents/{created['id']}/refund")
    problem = assert_problem(response, 409, "invalid_state_transition")
    assert problem["current_status"] == "requires_payment_method"


# ---------------------------------------------------------------------------------------------- unexpected errors


class Boom(RuntimeError):
    pass


async def crash() -> None:
    raise Boom("an unexpected failure with internals the caller must not see: /secret/path")


@pytest.fixture
async def crashing_http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The real app plus one route that fails unexpectedly; the client receives the 500 instead of the raise."""
    app.add_api_route("/_test/crash", crash, methods=["GET"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as client:
        yield client


async def test_unexpected_error_is_a_500_problem_without_internals(crashing_http: httpx.AsyncClient) -> None:
    response = await crashing_http.get("/_test/crash", headers={"X-Request-Id": "trace-500"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert problem["code"] == "internal_error"
    assert problem["type"] == "urn:paymux:problem:internal_error"
    assert problem["status"] == 500
    assert problem["title"]
    assert problem["request_id"] == "trace-500"
    assert "secret" not in response.text
    assert "Boom" not in response.text


async def test_unexpected_error_response_carries_the_request_id_header(
    crashing_http: httpx.AsyncClient,
) -> None:
    response = await crashing_http.get("/_test/crash")
    assert response.status_code == 500
    assert response.headers.get("x-request-id") == response.json()["request_id"]


# ---------------------------------------------------------------------------------------------- X-Request-Id


async def test_every_response_carries_a_request_id(
    server: ServerClient, tenant: Tenant, http: httpx.AsyncClient
) -> None:
    created = await server.post("/v1/payment_intents", intent_body(tenant))
    responses = [
        await http.get("/healthz"),
        created,
        await server.get(f"/v1/payment_intents/{created.json()['id']}"),
        await server.get("/v1/payment_intents"),
        await http.get("/v1/payment_intents"),
        await http.get("/nope"),
        await http.delete("/v1/payment_intents"),
        await server.post("/v1/payment_intents", raw=b"{"),
        await server.post("/v1/payment_intents", raw=oversized_refund_body()),
    ]
    assert [response.status_code for response in responses] == [200, 201, 200, 200, 401, 404, 405, 422, 413]
    ids = [response.headers["x-request-id"] for response in responses]
    assert all(request_id.startswith("req_") and len(request_id) == 30 for request_id in ids)
    assert len(set(ids)) == len(ids), "each request gets its own id"
    for response in responses:
        if response.status_code >= 400:
            assert response.json()["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "request_id", ["trace-abc-123", "0af7651916cd43dd8448eb211c80319c", "x", "A" * 128, 'quote"and<angle>']
)
async def test_a_sane_incoming_request_id_is_echoed(
    http: httpx.AsyncClient, server: ServerClient, tenant: Tenant, request_id: str
) -> None:
    ok = await http.get("/healthz", headers={"X-Request-Id": request_id})
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == request_id
    failed = await http.get("/nope", headers={"X-Request-Id": request_id})
    assert assert_problem(failed, 404, "not_found")["request_id"] == request_id
    signed = await server.get("/v1/payment_intents", headers={"X-Request-Id": request_id})
    assert signed.status_code == 200, signed.text
    assert signed.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    ["has space", "A" * 129, "tab\there", "caf\u00e9"],
    ids=["space", "too_long", "tab", "non_ascii"],
)
async def test_an_insane_incoming_request_id_is_replaced(http: httpx.AsyncClient, request_id: str) -> None:
    response = await http.get("/nope", headers={b"X-Request-Id": request_id.encode("utf-8")})
    problem = assert_problem(response, 404, "not_found")
    assert problem["request_id"] != request_id
    assert problem["request_id"].startswith("req_")
