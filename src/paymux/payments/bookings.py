"""What each payment event posts to the ledger, inside the unit of work of the state change it follows.

    in flight / authorised   hold     Dr provider clearing  Cr merchant payable   (pending for the merchant)
    succeeded / captured     payment  Dr provider clearing  Cr merchant payable   (the hold posted, or direct)
                             fee      Dr merchant payable   Cr fees               (the store's fee rule)
    failed / cancelled       the hold is voided
    refund requested         refund   Dr merchant payable   Cr refunds            (money set aside)
    refund succeeded         refund_settled  Dr refunds     Cr provider clearing  (the provider paid it back)
    refund failed            refund_failure  Dr refunds     Cr merchant payable   (set-aside money returned)

Every entry's idempotency key is its source object and what happened to it, so a replayed provider answer or a
retried use case never books twice. Fees are not returned on refunds.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from paymux.core.clock import Clock
from paymux.ledger.accounts import AccountSpec, MerchantAccounts
from paymux.ledger.entries import EntryKind, transfer
from paymux.ledger.service import HoldDraft, LedgerService
from paymux.payments.models import PaymentIntent, Transaction
from paymux.tenants.service import TenantService


class PaymentBookings:
    def __init__(
        self, ledger: LedgerService, tenants: TenantService, clock: Clock, hold_ttl: timedelta
    ) -> None:
        self._ledger = ledger
        self._tenants = tenants
        self._clock = clock
        self._hold_ttl = hold_ttl

    @staticmethod
    def _accounts(intent: PaymentIntent) -> MerchantAccounts:
        return MerchantAccounts(intent.client_partner_id, intent.merchant_id, intent.currency)

    @staticmethod
    def _clearing_name(intent: PaymentIntent) -> str:
        # A payment taken outside paymux (external or manual mode) clears through that channel.
        return intent.provider_name or intent.processing_mode

    async def hold(self, session: AsyncSession, intent: PaymentIntent) -> None:
        """The payment is in flight (or authorised, waiting for its capture): pending for the merchant."""
        accounts = self._accounts(intent)
        await self._ledger.hold(
            session,
            HoldDraft(
                idempotency_key=f"{intent.id}:hold",
                debit=accounts.clearing(self._clearing_name(intent)),
                credit=accounts.payable,
                amount=intent.amount,
                source_type="payment_intent",
                source_id=intent.id,
                expires_at=self._clock.now() + self._hold_ttl,
            ),
        )

    async def succeeded(self, session: AsyncSession, intent: PaymentIntent, amount: int) -> None:
        """The money is the merchant's: post the hold (the uncaptured rest is released), or book it directly when
        the hold has expired or never was; the fee is booked with it, in the same account updates."""
        accounts = self._accounts(intent)
        rule = await self._tenants.fee_rule(session, intent.store_id, intent.currency)
        fee = rule.fee_for(amount) if rule is not None else 0
        fees = (
            [
                transfer(
                    f"{intent.id}:fee",
                    debit=accounts.payable,
                    credit=accounts.fees,
                    amount=fee,
                    kind=EntryKind.FEE,
                    source_type="payment_intent",
                    source_id=intent.id,
                )
            ]
            if fee > 0
            else []
        )
        key = f"{intent.id}:payment"
        hold = await self._ledger.pending_hold(session, intent.id)
        if hold is not None:
            await self._ledger.post_hold(
                session, hold, kind=EntryKind.PAYMENT, amount=amount, key=key, with_entries=fees
            )
            return
        payment = transfer(
            key,
            debit=accounts.clearing(self._clearing_name(intent)),
            credit=accounts.payable,
            amount=amount,
            kind=EntryKind.PAYMENT,
            source_type="payment_intent",
            source_id=intent.id,
        )
        await self._ledger.book_many(session, [payment, *fees])

    async def released(self, session: AsyncSession, intent: PaymentIntent) -> None:
        """The payment will not happen: its pending amount goes away."""
        hold = await self._ledger.pending_hold(session, intent.id)
        if hold is not None:
            await self._ledger.void_hold(session, hold)

    async def refund_requested(
        self, session: AsyncSession, intent: PaymentIntent, refund: Transaction
    ) -> None:
        accounts = self._accounts(intent)
        await self._refund_entry(
            session, refund, "refund", accounts.payable, accounts.refunds, EntryKind.REFUND
        )

    async def refund_succeeded(
        self, session: AsyncSession, intent: PaymentIntent, refund: Transaction
    ) -> None:
        accounts = self._accounts(intent)
        clearing = accounts.clearing(self._clearing_name(intent))
        await self._refund_entry(
            session, refund, "settled", accounts.refunds, clearing, EntryKind.REFUND_SETTLED
        )

    async def refund_failed(self, session: AsyncSession, intent: PaymentIntent, refund: Transaction) -> None:
        accounts = self._accounts(intent)
        await self._refund_entry(
            session, refund, "failed", accounts.refunds, accounts.payable, EntryKind.REFUND_FAILURE
        )

    async def _refund_entry(
        self,
        session: AsyncSession,
        refund: Transaction,
        step: str,
        debit: AccountSpec,
        credit: AccountSpec,
        kind: EntryKind,
    ) -> None:
        await self._ledger.book(
            session,
            transfer(
                f"{refund.id}:{step}",
                debit=debit,
                credit=credit,
                amount=refund.amount,
                kind=kind,
                source_type="refund",
                source_id=refund.id,
            ),
        )
