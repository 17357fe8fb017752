"""Outbound HTTP for provider adapters: one shared client, and the mapping of transport failures onto the
adapter protocol's errors (was the request sent? then the outcome is unknown)."""

from __future__ import annotations

import httpx

from paymux.providers.base import ProviderTimeout, ProviderUnavailable


def provider_client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), follow_redirects=False
    )


def transport_error(provider: str, exc: httpx.HTTPError) -> ProviderTimeout | ProviderUnavailable:
    """Connecting failed: the provider never saw the request. Anything later: it may have acted on it."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ProviderUnavailable(f"{provider}: could not connect ({exc})")
    return ProviderTimeout(f"{provider}: no usable answer ({type(exc).__name__}: {exc})")


async def send(
    http: httpx.AsyncClient,
    provider: str,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to a provider. Transport failures and 5xx answers become the protocol's errors: a 5xx may
    come after the provider acted, so its outcome is unknown (a timeout), never a decline."""
    try:
        response = await http.request(method, url, content=content, headers=headers, params=params)
    except httpx.HTTPError as exc:
        raise transport_error(provider, exc) from exc
    if response.status_code >= 500:
        raise ProviderTimeout(f"{provider}: HTTP {response.status_code}; the outcome is unknown")
    return response
