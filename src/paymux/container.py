"""Builds every collaborator of a paymux process once, from its settings: no I/O happens at import time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx
import redis.asyncio as aioredis
from argon2 import PasswordHasher

from paymux.audit.service import AuditLog
from paymux.auth.client_admin import ApiClientAdmin
from paymux.auth.devices import DeviceService
from paymux.auth.keys import SigningKeys
from paymux.auth.service import ApiClientService, PaymentTokenService
from paymux.auth.user_admin import UserAdmin
from paymux.auth.users import UserService
from paymux.config import Settings
from paymux.core.clock import Clock, SystemClock
from paymux.core.crypto import EnvelopeCipher, load_key_encryption_key
from paymux.core.db import Database
from paymux.events.service import EventService
from paymux.gateway.idempotency import IdempotencyStore
from paymux.gateway.ratelimit import RateLimiter, RateLimits
from paymux.ledger.service import LedgerService
from paymux.payments.bookings import PaymentBookings
from paymux.payments.service import PaymentService
from paymux.providers.aupay.adapter import AuPayProvider
from paymux.providers.base import PaymentProvider
from paymux.providers.dpayment.adapter import DPaymentProvider
from paymux.providers.http import provider_client
from paymux.providers.linepay.adapter import LinePayProvider
from paymux.providers.paypay.adapter import PayPayProvider
from paymux.providers.rakuten.adapter import RakutenPayProvider
from paymux.providers.registry import ProviderRegistry
from paymux.providers.testmode import BuiltinTestProvider
from paymux.reconciliation.service import ReconciliationService
from paymux.tenants.admin import TenantAdmin
from paymux.tenants.payable import PayableStores
from paymux.tenants.service import TenantService
from paymux.webhooks.inbound import InboundWebhookService
from paymux.webhooks.service import WebhookService


def default_providers(settings: Settings, http: httpx.AsyncClient, clock: Clock) -> list[PaymentProvider]:
    public_url = settings.public_url.rstrip("/")
    return [
        BuiltinTestProvider(),
        PayPayProvider(http, clock),
        LinePayProvider(http, return_url=lambda provider: f"{public_url}/v1/webhooks/{provider}/return"),
        DPaymentProvider(http, clock),
        AuPayProvider(http, clock),
        RakutenPayProvider(http, clock),
    ]


@dataclass
class Container:
    settings: Settings
    clock: Clock
    db: Database
    cipher: EnvelopeCipher
    redis: aioredis.Redis | None
    rate_limiter: RateLimiter
    idempotency: IdempotencyStore
    providers: ProviderRegistry
    events: EventService
    api_clients: ApiClientService
    payment_tokens: PaymentTokenService
    signing_keys: SigningKeys
    users: UserService
    devices: DeviceService
    audit: AuditLog
    user_admin: UserAdmin
    client_admin: ApiClientAdmin
    tenant_admin: TenantAdmin
    tenants: TenantService
    payments: PaymentService
    ledger: LedgerService
    reconciliation: ReconciliationService
    webhooks: WebhookService
    inbound_webhooks: InboundWebhookService
    provider_http: httpx.AsyncClient

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        providers: list[PaymentProvider] | None = None,
    ) -> Container:
        clock = clock or SystemClock()
        db = Database(
            settings.database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        master_key = settings.master_key.get_secret_value() if settings.master_key else None
        cipher = EnvelopeCipher(load_key_encryption_key(master_key, settings.master_key_file))
        redis = aioredis.from_url(settings.redis_url, socket_timeout=0.5) if settings.redis_url else None
        rate_limiter = RateLimiter(
            RateLimits(
                merchant=settings.ratelimit_merchant,
                store=settings.ratelimit_store,
                ip=settings.ratelimit_ip,
                global_=settings.ratelimit_global,
            ),
            redis=redis,
            enabled=settings.ratelimit_enabled,
        )
        provider_http = provider_client(settings.provider_timeout_seconds)
        registry = ProviderRegistry(
            providers if providers is not None else default_providers(settings, provider_http, clock)
        )
        events = EventService(db, clock)
        audit = AuditLog(db, clock)
        api_clients = ApiClientService(db, cipher, clock)
        payment_tokens = PaymentTokenService(db, clock, timedelta(seconds=settings.payment_token_ttl_seconds))
        payable_stores = PayableStores(db, clock)
        tenants = TenantService(db, cipher, clock, registry, api_clients, audit, payable_stores)
        access_ttl = timedelta(seconds=settings.access_token_ttl_seconds)
        signing_keys = SigningKeys(db, cipher, clock, audit, published_for=access_ttl)
        users = UserService(
            db,
            clock,
            signing_keys,
            audit,
            audience=settings.jwt_audience,
            access_ttl=access_ttl,
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
            max_failures=settings.login_max_failures,
            lockout=timedelta(seconds=settings.login_lockout_seconds),
            hasher=PasswordHasher(
                time_cost=settings.password_hash_time_cost, memory_cost=settings.password_hash_memory_kib
            ),
        )
        devices = DeviceService(db, clock, signing_keys, audit, audience=settings.jwt_audience)
        ledger = LedgerService(db, clock)
        bookings = PaymentBookings(
            ledger, tenants, clock, hold_ttl=timedelta(seconds=settings.ledger_hold_ttl_seconds)
        )
        payments = PaymentService(
            db,
            clock,
            tenants=tenants,
            tokens=payment_tokens,
            events=events,
            providers=registry,
            bookings=bookings,
            audit=audit,
            provider_timeout=settings.provider_timeout_seconds,
        )
        idempotency = IdempotencyStore(
            db,
            clock,
            cipher,
            ttl=timedelta(hours=settings.idempotency_ttl_hours),
            lock_timeout=timedelta(seconds=settings.idempotency_lock_seconds),
        )
        return cls(
            settings=settings,
            clock=clock,
            db=db,
            cipher=cipher,
            redis=redis,
            rate_limiter=rate_limiter,
            idempotency=idempotency,
            providers=registry,
            events=events,
            api_clients=api_clients,
            payment_tokens=payment_tokens,
            signing_keys=signing_keys,
            users=users,
            devices=devices,
            audit=audit,
            user_admin=UserAdmin(db, clock, users, tenants, audit),
            client_admin=ApiClientAdmin(db, clock, api_clients, tenants, audit),
            tenant_admin=TenantAdmin(db, clock, audit, payable_stores),
            tenants=tenants,
            payments=payments,
            ledger=ledger,
            reconciliation=ReconciliationService(db, clock, payments, audit),
            webhooks=WebhookService(db, clock, cipher, audit, allow_private=settings.webhooks_allow_private),
            inbound_webhooks=InboundWebhookService(db, clock, registry, tenants, payments),
            provider_http=provider_http,
        )

    async def close(self) -> None:
        await self.provider_http.aclose()
        await self.db.dispose()
        if self.redis is not None:
            await self.redis.aclose()
