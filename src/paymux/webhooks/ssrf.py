"""Server-side request forgery guard for webhook URLs.

A webhook URL is the merchant's to choose, so it must not reach paymux's own network: it must be https and every
address its host resolves to must be public. The check runs at registration and again at every connect, on the
addresses actually connected to, so a DNS answer that changes after registration (DNS rebinding) is caught too.
`PAYMUX_WEBHOOKS_ALLOW_PRIVATE=true` allows http and private or loopback addresses, for development and tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx


class UnsafeWebhookURL(ValueError):
    pass


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool) -> tuple[str, int]:
    """The host and port of a URL webhooks may be sent to; `UnsafeWebhookURL` when they may not."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeWebhookURL(f"not a valid URL: {exc}") from None
    allowed_schemes = {"https", "http"} if allow_private else {"https"}
    if parts.scheme not in allowed_schemes:
        raise UnsafeWebhookURL("webhook URLs must use https")
    if not parts.hostname:
        raise UnsafeWebhookURL("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookURL("the URL must not carry credentials")
    if parts.fragment:
        raise UnsafeWebhookURL("the URL must not have a fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses to connect to; every one of them must be public unless private ones are allowed."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeWebhookURL(f"{host} does not resolve: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeWebhookURL(f"{host} does not resolve")
    if not allow_private:
        blocked = [address for address in addresses if not is_public_address(address)]
        if blocked:
            raise UnsafeWebhookURL(f"{host} resolves to a non-public address ({', '.join(blocked)})")
    return addresses


async def validate_url(url: str, *, allow_private: bool) -> None:
    host, port = check_url(url, allow_private=allow_private)
    await resolve(host, port, allow_private=allow_private)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses non-public addresses, and connects to the address it checked."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore passes the timeout in
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port, allow_private=self._allow_private)
        except UnsafeWebhookURL as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        last_error: Exception | None = None
        for address in addresses:
            try:
                # TLS still verifies the certificate for `host`: httpcore takes the server name from the URL.
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error or httpcore.ConnectError(f"could not connect to {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore passes the timeout in
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded network backend (httpx takes no backend argument, so the pool is rebuilt
    with the same settings and the backend added)."""

    def __init__(self, *, allow_private: bool, max_connections: int = 100) -> None:
        super().__init__(trust_env=False, limits=httpx.Limits(max_connections=max_connections))
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=max_connections,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            network_backend=GuardedNetworkBackend(allow_private=allow_private),
        )


def guarded_client(*, allow_private: bool, timeout: float = 10.0) -> httpx.AsyncClient:
    """The HTTP client webhooks are sent with: guarded connects, no redirects, no proxies from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allow_private=allow_private),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )
