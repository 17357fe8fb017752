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
