"""The providers a process knows, by name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from paymux.providers.base import PaymentProvider


class UnknownProvider(KeyError):
    pass


class ProviderRegistry:
    def __init__(self, providers: Iterable[PaymentProvider]) -> None:
        self._providers = {provider.name: provider for provider in providers}

    def get(self, name: str) -> PaymentProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProvider(name) from None

    def __iter__(self) -> Iterator[PaymentProvider]:
        return iter(self._providers.values())

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def names(self) -> list[str]:
        return sorted(self._providers)

    def __repr__(self) -> str:
        return f"ProviderRegistry({self.names()!r})"
