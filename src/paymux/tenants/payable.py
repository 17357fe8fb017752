"""Whether a store takes payments: asked by every PaymentIntent create, so kept for a few seconds.

A store's merchant and partner never change; whether it and its merchant are active does. A change made through
this process (a config sync, the portal's merchant and store updates) is seen at once, one made through another
process within `TTL`, as with API clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, select

from paymux.core.clock import Clock
from paymux.core.db import Database
from paymux.core.kept import Kept
from paymux.tenants.models import Merchant, Store

TTL = timedelta(seconds=5)

_PAYABLE_STORE = (
    select(
        Store.id,
        Store.client_partner_id,
        Store.merchant_id,
        Store.is_active.label("store_active"),
        Merchant.is_active.label("merchant_active"),
    )
    .join(Merchant, Merchant.id == Store.merchant_id)
    .where(Store.id == bindparam("store_id"))
)


@dataclass(frozen=True, slots=True)
class PayableStore:
    id: int
    client_partner_id: int
    merchant_id: int
    active: bool  # the store and its merchant both take payments


class PayableStores:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._kept: Kept[int, PayableStore] = Kept(TTL, clock)

    async def get(self, store_id: int) -> PayableStore | None:
        """The store, or None when there is none (not kept: a store made in another process is seen at once)."""
        kept = self._kept.get(store_id)
        if kept is not None:
            return kept
        read_at = self._kept.generation
        async with self._db.reading() as session:
            connection = await session.connection()  # a Core statement: the ORM's execute adds nothing here
            row = (await connection.execute(_PAYABLE_STORE, {"store_id": store_id})).one_or_none()
        if row is None:
            return None
        store = PayableStore(
            id=row.id,
            client_partner_id=row.client_partner_id,
            merchant_id=row.merchant_id,
            active=bool(row.store_active and row.merchant_active),
        )
        self._kept.keep(store_id, store, read_at=read_at)
        return store

    def forget_all(self) -> None:
        """Drop every kept store; called once a change to merchants or stores has committed (a merchant's
        reaches all its stores, and such changes are rare)."""
        self._kept.forget_all()
