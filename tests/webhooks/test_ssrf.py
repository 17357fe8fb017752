"""Webhook URLs cannot reach paymux's own network: checked at registration and again at every connect."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from paymux.app import create_app
from paymux.config import Settings
from paymux.container import Container
from paymux.core.clock import FrozenClock
from paymux.webhooks.ssrf import UnsafeWebhookURL, check_url, guarded_client, is_public_address, validate_url
from tests.conftest import empty_all_tables
from tests.support import ServerClient, Tenant, bootstrap_tenant
from tests.webhooks.receiver import running_receiver

BLOCKED = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "0.0.0.0",  # noqa: S104 - a blocked address, not a bind
    "224.0.0.1",
    "::1",
    "fc00::1",
    "fe80::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_private_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://merchant.example/hook",  # plain http
        "ftp://merchant.example/hook",
        "https:///no-host",
        "https://user:pass@merchant.example/hook",
        "https://merchant.example/hook#fragment",
        "https://merchant.example:99999/hook",
    ],
)
def test_url_shapes_that_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookURL):
        check_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest",
        "https://localhost/hook",
        "https://10.0.0.8/",
    ],
)
async def test_urls_resolving_to_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeWebhookURL, match="non-public"):
        await validate_url(url, allow_private=False)


async def test_a_public_ip_literal_passes() -> None:
    await validate_url("https://93.184.216.34/hook", allow_private=False)


async def test_development_mode_allows_http_and_loopback() -> None:
    await validate_url("http://127.0.0.1:8080/hook", allow_private=True)


async def test_connect_time_check_refuses_a_host_that_now_resolves_to_loopback() -> None:
    # DNS rebinding: whatever the name resolved to at registration, the connect resolves it again and checks.
    async with running_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        async with guarded_client(allow_private=False) as client:
            with pytest.raises(httpx.ConnectError, match="non-public"):
                await client.post(f"http://localhost:{port}/hooks", content=b"{}")
        assert receiver.received == []
        async with guarded_client(allow_private=True) as client:
            assert (await client.post(f"http://localhost:{port}/hooks", content=b"{}")).status_code == 200


@pytest.fixture
async def strict_app(settings: Settings, clock: FrozenClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings.model_copy(update={"webhooks_allow_private": False}), clock=clock)
    container: Container = application.state.container
    try:
        yield application
    finally:
        await empty_all_tables(container.db)
        await container.close()


async def test_registration_refuses_private_urls_in_production_mode(
    strict_app: FastAPI, clock: FrozenClock
) -> None:
    container: Container = strict_app.state.container
    tenant: Tenant = await bootstrap_tenant(container, partner="strict", merchant="SM", store="SS")
    transport = httpx.ASGITransport(app=strict_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://paymux.test") as http:
        server = ServerClient(http, tenant.client_id, tenant.client_secret, clock)
        for url in ("http://93.184.216.34/hook", "https://127.0.0.1/hook", "https://169.254.169.254/"):
            response = await server.post("/v1/webhook_endpoints", {"url": url})
            assert response.status_code == 422, url
            assert response.json()["code"] == "webhook_url_not_allowed"
        created = await server.post("/v1/webhook_endpoints", {"url": "https://93.184.216.34/hook"})
        assert created.status_code == 201, created.text
        moved = await server.request(
            "PATCH", f"/v1/webhook_endpoints/{created.json()['id']}", {"url": "https://10.0.0.1/hook"}
        )
        assert moved.json()["code"] == "webhook_url_not_allowed"
