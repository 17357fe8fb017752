"""PaymentIntent use cases. Each runs in units of work; a provider is called only between them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar, assert_never

import structlog
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from paymux.audit.service import AuditAction, AuditLog, AuditObject
from paymux.auth.service import IssuedToken, PaymentTokenService
from paymux.core.clock import Clock
from paymux.core.db import Base, Database, insert_if_absent
from paymux.core.ids import new_id
from paymux.events.models import Event
from paymux.events.service import EventService
from paymux.gateway.permissions import Operation, require
from paymux.gateway.principal import Principal
from paymux.payments.bookings import PaymentBookings
from paymux.payments.errors import (
    CaptureAmountTooLarge,
    CaptureNotAllowed,
    ConfirmationInProgress,
    CustomerCodeRequired,
    InvalidStateTransition,
    MerchantRefTaken,
    PaymentIntentNotFound,
    PaymentMethodNotSupported,
    ProviderAmbiguous,
    ProviderCallFailed,
    ProviderNotConfigured,
    RefundExceedsCaptured,
    StoreInactive,
    StoreRequired,
    TransactionNotFound,
    UnknownProvider,
)
from paymux.payments.models import PaymentIntent, PaymentIntentStatusChange, Transaction
from paymux.payments.schemas import (
    IntentFilters,
    PaymentIntentCancel,
    PaymentIntentCapture,
    PaymentIntentConfirm,
    PaymentIntentCreate,
    PaymentIntentOut,
    ProcessingMode,
    RefundCreate,
    TransactionOut,
    TransactionStatus,
    TransactionType,
)
from paymux.payments.state import PaymentStatus, can_transition, event_type_for
from paymux.providers.base import (
    PaymentMethodType,
    PaymentProvider,
    PaymentReference,
    PaymentRequest,
    ProviderCredentials,
    ProviderError,
    ProviderPayment,
    ProviderPaymentStatus,
    ProviderRefund,
    ProviderRefundStatus,
    ProviderTimeout,
    RefundRequest,
)
from paymux.providers.registry import ProviderRegistry
from paymux.tenants.payable import PayableStore
from paymux.tenants.provider_configs import ProviderConfig
from paymux.tenants.service import TenantService

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_STATUS_CHECKS = 100


def check_delay(check_number: int) -> timedelta:
    """When a pending payment is checked with its provider: 5 s, 10 s, 20 s, ... then every 5 minutes."""
    return timedelta(seconds=min(5 * 2 ** (check_number - 1), 300))


@dataclass(frozen=True, slots=True)
class TenantScope:
    """Which tenants a back-office job covers: everything, one partner, or one merchant."""

    client_partner_id: int | None = None
    merchant_id: int | None = None


@dataclass(frozen=True, slots=True)
class SettledTransaction:
    id: str
    kind: str  # "payment" or "refund"
    payment_intent_id: str
    provider_transaction_id: str | None
    amount: int
    currency: str
    settled_at: datetime
    client_partner_id: int
    merchant_id: int

    @property
    def reference(self) -> str:
        """The id paymux gave the provider for it: the intent's for a payment, the refund's own for a refund."""
        return self.payment_intent_id if self.kind == TransactionType.PAYMENT.value else self.id

    @property
    def references(self) -> tuple[str, ...]:
        """Every id a provider's file may name it by: a refund also by its intent's id."""
        if self.kind == TransactionType.PAYMENT.value:
            return (self.payment_intent_id,)
        return (self.id, self.payment_intent_id)

    @classmethod
    def of(cls, row: Transaction) -> SettledTransaction:
        return cls(
            id=row.id,
            kind=row.type,
            payment_intent_id=row.payment_intent_id,
            provider_transaction_id=row.provider_transaction_id,
            amount=row.amount,
            currency=row.currency,
            settled_at=row.updated_at,
            client_partner_id=row.client_partner_id,
            merchant_id=row.merchant_id,
        )


@dataclass(frozen=True, slots=True)
class CreatedIntent:
    intent: PaymentIntent
    token: IssuedToken


@dataclass(frozen=True, slots=True)
class IntentDraft:
    """A PaymentIntent create checked and built, not yet written: the intent and its token, and the rows that
    make it (the intent first, then its history, event and token)."""

    created: CreatedIntent
    rows: tuple[Base, ...]
    store: PayableStore


def _pending_payment_of(intent_id: str | SQLColumnExpression[str]) -> ColumnElement[bool]:
    """A payment attempt of the intent that its provider has not settled yet."""
    return and_(
        Transaction.payment_intent_id == intent_id,
        Transaction.type == TransactionType.PAYMENT.value,
        Transaction.status == TransactionStatus.PENDING.value,
    )


class PaymentService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        tenants: TenantService,
        tokens: PaymentTokenService,
        events: EventService,
        providers: ProviderRegistry,
        bookings: PaymentBookings,
        audit: AuditLog,
        provider_timeout: float,
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock
        self._tenants = tenants
        self._tokens = tokens
        self._events = events
        self._providers = providers
        self._bookings = bookings
        self.provider_timeout = provider_timeout  # the deadline of one provider call, in seconds

    # ------------------------------------------------------------------ create, read, list

    async def create(self, principal: Principal, request: PaymentIntentCreate) -> CreatedIntent:
        draft = await self.draft(principal, request)
        async with self._db.unit_of_work() as session:
            # The unique constraint decides whether the merchant_ref_id is free, also between racing creates.
            # Core rather than the ORM's flush, the intent's history, event and token inserted with it (in one
            # statement on PostgreSQL): this is the hot path, and nothing here changes after.
            intent, *dependents = draft.rows
            if not await insert_if_absent(
                session, intent, *dependents, unique=("merchant_id", "merchant_ref_id")
            ):
                raise await self._merchant_ref_taken(session, principal, draft.store, request.merchant_ref_id)
        return draft.created

    async def draft(self, principal: Principal, request: PaymentIntentCreate) -> IntentDraft:
        """A create checked and built but not written: the caller writes `rows` (`Database.insert_at_once`
        writes them in one statement) and, should a unique constraint refuse them, runs `create`, which says
        why."""
        require(principal, Operation.PAYMENT_INTENTS_CREATE)
        # A store-scoped client may omit store_id; naming another store finds nothing in its scope (404).
        store_id = request.store_id if request.store_id is not None else principal.store_id
        if store_id is None:
            raise StoreRequired("store_id is required for clients not bound to one store.")
        if request.provider_name is not None:
            self._provider(request.provider_name, request.payment_method_type)
        store = await self._tenants.payable_store(principal, store_id)
        if not store.active:
            raise StoreInactive(f"Store {store.id} or its merchant is deactivated.")
        now = self._clock.now()
        intent = PaymentIntent(
            id=new_id("pi"),
            client_partner_id=store.client_partner_id,
            merchant_id=store.merchant_id,
            store_id=store.id,
            merchant_ref_id=request.merchant_ref_id,
            order_id=request.order_id,
            amount=request.amount,
            currency=request.currency,
            amount_captured=0,
            amount_refunded=0,
            payment_method_type=request.payment_method_type.value,
            processing_mode=request.processing_mode.value,
            status=PaymentStatus.REQUIRES_PAYMENT_METHOD.value,
            provider_name=request.provider_name,
            metadata_=dict(request.metadata),
            created_at=now,
            updated_at=now,
        )
        token, token_row = self._tokens.new_token(
            payment_intent_id=intent.id,
            client_partner_id=intent.client_partner_id,
            merchant_id=intent.merchant_id,
            store_id=intent.store_id,
        )
        return IntentDraft(
            created=CreatedIntent(intent=intent, token=token),
            rows=(
                intent,
                self._history(intent, None, "created"),
                self._intent_event(intent, "payment_intent.created"),
                token_row,
            ),
            store=store,
        )

    async def _merchant_ref_taken(
        self, session: AsyncSession, principal: Principal, store: PayableStore, merchant_ref_id: str
    ) -> MerchantRefTaken:
        taken = (
            await session.execute(
                select(PaymentIntent.id, PaymentIntent.store_id).where(
                    PaymentIntent.merchant_id == store.merchant_id,
                    PaymentIntent.merchant_ref_id == merchant_ref_id,
                )
            )
        ).one_or_none()
        # Name the existing intent only to a caller who may see it (a store-scoped client may not see its
        # sibling stores' intents).
        if taken is not None and principal.sees(
            client_partner_id=store.client_partner_id, merchant_id=store.merchant_id, store_id=taken.store_id
        ):
            return MerchantRefTaken(
                f"merchant_ref_id {merchant_ref_id!r} is {taken.id}.", payment_intent_id=taken.id
            )
        return MerchantRefTaken(f"merchant_ref_id {merchant_ref_id!r} is already used.")

    async def retrieve(self, principal: Principal, intent_id: str) -> PaymentIntent:
        require(principal, Operation.PAYMENT_INTENTS_READ)
        async with self._db.reading() as session:
            return await self._find(session, principal, intent_id)

    async def list_intents(
        self, principal: Principal, filters: IntentFilters, *, limit: int, starting_after: str | None
    ) -> tuple[list[PaymentIntent], bool]:
        require(principal, Operation.PAYMENT_INTENTS_READ)
        statement = principal.scope(select(PaymentIntent), PaymentIntent)
        if principal.payment_intent_id is not None:  # a payment token's whole world is its one intent
            statement = statement.where(PaymentIntent.id == principal.payment_intent_id)
        if filters.status is not None:
            statement = statement.where(PaymentIntent.status == filters.status.value)
        if filters.store_id is not None:
            statement = statement.where(PaymentIntent.store_id == filters.store_id)
        if filters.merchant_id is not None:
            statement = statement.where(PaymentIntent.merchant_id == filters.merchant_id)
        if filters.merchant_ref_id is not None:
            statement = statement.where(PaymentIntent.merchant_ref_id == filters.merchant_ref_id)
        if filters.created_gte is not None:
            statement = statement.where(PaymentIntent.created_at >= filters.created_gte)
        if filters.created_lte is not None:
            statement = statement.where(PaymentIntent.created_at <= filters.created_lte)
        if starting_after is not None:
            statement = statement.where(PaymentIntent.id < starting_after)
        statement = statement.order_by(PaymentIntent.id.desc()).limit(limit + 1)
        async with self._db.reading() as session:
            rows = list((await session.execute(statement)).scalars())
        return rows[:limit], len(rows) > limit

    # ------------------------------------------------------------------ confirm and cancel (SDK or server)

    async def confirm(
        self, principal: Principal, intent_id: str, request: PaymentIntentConfirm
    ) -> PaymentIntent:
        require(principal, Operation.PAYMENT_INTENTS_CONFIRM)
        async with self._db.unit_of_work() as session:
            intent, pending_attempt_id = await self._find_to_confirm(session, principal, intent_id)
            if principal.payment_token_hash is not None:
                await self._tokens.consume(session, principal.payment_token_hash)
            if ProcessingMode(intent.processing_mode) is not ProcessingMode.PGW_PROCESSED:
                self._transition(session, intent, PaymentStatus.REQUIRES_CAPTURE, "confirmed")
                await self._bookings.hold(session, intent)
                return intent
            if intent.status != PaymentStatus.REQUIRES_PAYMENT_METHOD.value:
                raise InvalidStateTransition(
                    f"Only a payment intent in requires_payment_method can be confirmed; this one is {intent.status}.",
                    current_status=intent.status,
                )
            if (
                PaymentMethodType(intent.payment_method_type) is PaymentMethodType.QR_CPM
                and not request.customer_code
            ):
                raise CustomerCodeRequired("A qr_cpm payment is confirmed with the customer's scanned code.")
            if pending_attempt_id is not None:
                raise ConfirmationInProgress(
                    "This intent's provider has not answered the first confirmation yet."
                )
            provider, config = await self._select_provider(session, intent, request.provider_name)
            credentials = self._tenants.credentials(config)
            intent.provider_name = provider.name
            attempt = self._new_transaction(intent, TransactionType.PAYMENT, intent.amount)
            attempt.provider_name = provider.name
            attempt.next_check_at = self._clock.now() + check_delay(1)
            session.add(attempt)
            method = PaymentMethodType(intent.payment_method_type)
            if method is not PaymentMethodType.QR_MPM:
                # A QR code goes requires_payment_method -> requires_action when it is shown; anything else is
                # processing from the moment the provider hears of it.
                self._transition(session, intent, PaymentStatus.PROCESSING, "confirmed")
            await self._bookings.hold(session, intent)  # last: it locks the merchant's accounts until commit
            provider_request = PaymentRequest(
                payment_intent_id=intent.id,
                amount=intent.amount,
                currency=intent.currency,
                payment_method_type=method,
                customer_code=request.customer_code,
                description=intent.order_id,
                metadata=dict(intent.metadata_ or {}),
            )
        # Committed: the attempt is on record before the provider hears of it.
        try:
            result = await self._call(provider.create_payment(credentials, provider_request))
        except ProviderTimeout as exc:
            log.warning(
                "provider timeout; the status check resolves the payment", intent=intent.id, error=str(exc)
            )
            return await self._mark_processing(intent.id, "provider_timeout")
        except ProviderError as exc:
            result = ProviderPayment(
                status=ProviderPaymentStatus.FAILED,
                provider_transaction_id=None,
                amount=intent.amount,
                currency=intent.currency,
                failure_code=exc.code,
                failure_message=str(exc)[:500],
            )
        return await self.record_payment_result(intent.id, attempt.id, result)

    async def _mark_processing(self, intent_id: str, reason: str) -> PaymentIntent:
        async with self._db.unit_of_work() as session:
            intent = await session.get(PaymentIntent, intent_id, with_for_update=True)
            if intent is None:
                raise PaymentIntentNotFound(f"No payment intent {intent_id}.")
            if intent.status in {
                PaymentStatus.REQUIRES_PAYMENT_METHOD.value,
                PaymentStatus.REQUIRES_ACTION.value,
            }:
                self._transition(session, intent, PaymentStatus.PROCESSING, reason)
            return intent

    async def record_payment_result(
        self, intent_id: str, attempt_id: str, result: ProviderPayment
    ) -> PaymentIntent:
        """Apply a provider's answer to a pending payment attempt (from confirm, a webhook or a status check)."""
        async with self._db.unit_of_work() as session:
            intent, attempt = await self._locked_attempt(session, intent_id, attempt_id)
            if attempt.status != TransactionStatus.PENDING.value:
                return intent  # already resolved by another path
            if (result.amount, result.currency) != (intent.amount, intent.currency):
                log.error(
                    "provider answered with another amount; left for review",
                    intent=intent.id,
                    expected=(intent.amount, intent.currency),
                    got=(result.amount, result.currency),
                )
                return intent
            if result.provider_transaction_id is not None:
                attempt.provider_transaction_id = result.provider_transaction_id
                intent.provider_transaction_id = result.provider_transaction_id
            if result.provider_reference is not None:
                intent.provider_reference = result.provider_reference
            now = self._clock.now()
            waiting = intent.status in {
                PaymentStatus.REQUIRES_PAYMENT_METHOD.value,
                PaymentStatus.REQUIRES_ACTION.value,
            }
            match result.status:
                case ProviderPaymentStatus.SUCCEEDED:
                    self._settle_attempt(attempt, TransactionStatus.SUCCEEDED, now)
                    intent.amount_captured = intent.amount
                    if waiting:
                        self._transition(session, intent, PaymentStatus.PROCESSING, "provider_processing")
                    self._transition(session, intent, PaymentStatus.SUCCEEDED, "provider_succeeded")
                    await self._bookings.succeeded(session, intent, intent.amount_captured)
                case ProviderPaymentStatus.CANCELLED if waiting:
                    self._settle_attempt(
                        attempt, TransactionStatus.FAILED, now, "provider_cancelled", result.failure_message
                    )
                    intent.cancellation_reason = result.failure_message or "cancelled at the provider"
                    self._transition(session, intent, PaymentStatus.CANCELLED, "provider_cancelled")
                    await self._bookings.released(session, intent)
                case ProviderPaymentStatus.FAILED | ProviderPaymentStatus.CANCELLED:
                    code = result.failure_code or (
                        "provider_cancelled"
                        if result.status is ProviderPaymentStatus.CANCELLED
                        else "provider_failed"
                    )
                    self._settle_attempt(attempt, TransactionStatus.FAILED, now, code, result.failure_message)
                    intent.failure_code, intent.failure_message = code, result.failure_message
                    self._transition(session, intent, PaymentStatus.FAILED, "provider_failed")
                    await self._bookings.released(session, intent)
                case ProviderPaymentStatus.PROCESSING:
                    if waiting:
                        self._transition(session, intent, PaymentStatus.PROCESSING, "provider_processing")
                case ProviderPaymentStatus.REQUIRES_ACTION:
                    if intent.status == PaymentStatus.REQUIRES_PAYMENT_METHOD.value:
                        intent.next_action = dict(result.next_action or {})
                        self._transition(
                            session, intent, PaymentStatus.REQUIRES_ACTION, "provider_requires_action"
                        )
                    # Already showing a code, or processing after a timeout: keep waiting for the customer.
                case _ as unreachable:
                    assert_never(unreachable)
            return intent

    @staticmethod
    def _settle_attempt(
        attempt: Transaction,
        status: TransactionStatus,
        now: datetime,
        failure_code: str | None = None,
        failure_message: str | None = None,
    ) -> None:
        attempt.status = status.value
        attempt.failure_code = failure_code
        attempt.failure_message = failure_message
        attempt.next_check_at = None
        attempt.updated_at = now

    async def _pending_attempt(self, session: AsyncSession, intent_id: str) -> Transaction | None:
        statement = select(Transaction).where(_pending_payment_of(intent_id))
        return (await session.execute(statement.limit(1))).scalar_one_or_none()

    async def _with_pending_attempt(
        self, session: AsyncSession, intent_id: str
    ) -> tuple[PaymentIntent | None, Transaction | None]:
        """The intent and its pending payment attempt, if any, in one round trip."""
        statement = (
            select(PaymentIntent, Transaction)
            .outerjoin(Transaction, _pending_payment_of(PaymentIntent.id))
            .where(PaymentIntent.id == intent_id)
            .limit(1)
        )
        row = (await session.execute(statement)).one_or_none()
        return (None, None) if row is None else (row[0], row[1])

    @staticmethod
    async def _locked_attempt(
        session: AsyncSession, intent_id: str, attempt_id: str
    ) -> tuple[PaymentIntent, Transaction]:
        """The intent and one of its attempts, both locked, in one round trip. PostgreSQL locks a join's rows
        in the order of its FROM list, so the intent before the attempt, as every other path takes them."""
        statement = (
            select(PaymentIntent, Transaction)
            .join(Transaction, Transaction.payment_intent_id == PaymentIntent.id)
            .where(PaymentIntent.id == intent_id, Transaction.id == attempt_id)
            .with_for_update()
        )
        row = (await session.execute(statement)).one_or_none()
        if row is None:
            raise PaymentIntentNotFound(f"No payment intent {intent_id} with attempt {attempt_id}.")
        return row[0], row[1]

    # ------------------------------------------------------------------ status checks (webhooks, polling)

    async def check_payment(self, intent_id: str) -> PaymentIntent | None:
        """Ask the provider about the intent's pending payment and apply the answer; None when nothing is pending.

        This is the only way a provider webhook moves an intent: the webhook says "look", the status call says
        what is true.
        """
        async with self._db.reading() as session:
            intent, attempt = await self._with_pending_attempt(session, intent_id)
            if intent is None or attempt is None or attempt.provider_name is None:
                return intent
            try:
                provider, credentials, reference = await self._route(session, intent, attempt.provider_name)
            except ProviderNotConfigured as exc:
                log.error("pending payment that cannot be checked", intent=intent_id, error=exc.detail)
                return intent
        try:
            result = await self._call(provider.get_payment_status(credentials, reference))
        except ProviderError as exc:
            log.warning("status check failed; it is tried again later", intent=intent_id, error=str(exc))
            return intent
        return await self.record_payment_result(intent_id, attempt.id, result)

    async def check_due_payments(self, limit: int = 50) -> int:
        """Check pending payments whose time has come (webhooks may never arrive); returns how many it checked."""
        due = await self._claim_due_checks(TransactionType.PAYMENT, limit)
        for _, intent_id in due:
            try:
                await self.check_payment(intent_id)
            except Exception:
                log.exception("status check failed", intent=intent_id)
        return len(due)

    async def check_due_refunds(self, limit: int = 50) -> int:
        """Check refunds whose provider answer was lost; returns how many it checked."""
        due = await self._claim_due_checks(TransactionType.REFUND, limit)
        for refund_id, _ in due:
            try:
                await self.check_refund(refund_id)
            except Exception:
                log.exception("refund status check failed", refund=refund_id)
        return len(due)

    async def check_refund(self, refund_id: str) -> Transaction | None:
        """Ask the provider about a pending refund and apply the answer."""
        async with self._db.reading() as session:
            refund = await session.get(Transaction, refund_id)
            if (
                refund is None
                or refund.status != TransactionStatus.PENDING.value
                or refund.provider_name is None
            ):
                return refund
            intent = await session.get(PaymentIntent, refund.payment_intent_id)
            if intent is None:
                return refund
            try:
                provider, credentials, reference = await self._route(session, intent, refund.provider_name)
            except ProviderNotConfigured as exc:
                log.error("pending refund that cannot be checked", refund=refund_id, error=exc.detail)
                return refund
            request = RefundRequest(
                refund_id=refund.id,
                payment=reference,
                amount=refund.amount,
                reason=refund.reason,
                previously_refunded=intent.amount_refunded,
            )
        try:
            result = await self._call(provider.get_refund_status(credentials, request))
        except ProviderError as exc:
            log.warning(
                "refund status check failed; it is tried again later", refund=refund_id, error=str(exc)
            )
            return refund
        return await self.record_refund_result(refund_id, result)

    async def _claim_due_checks(self, kind: TransactionType, limit: int) -> list[tuple[str, str]]:
        """Pending transactions of a kind whose check is due, claimed by pushing their next check out (a worker
        that dies after claiming only delays them); returns (transaction id, intent id) pairs."""
        now = self._clock.now()
        async with self._db.unit_of_work() as session:
            rows = list(
                (
                    await session.execute(
                        select(Transaction)
                        .where(
                            Transaction.type == kind.value,
                            Transaction.status == TransactionStatus.PENDING.value,
                            Transaction.next_check_at <= now,
                        )
                        .order_by(Transaction.next_check_at)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            for row in rows:
                row.check_count += 1
                if row.check_count < MAX_STATUS_CHECKS:
                    row.next_check_at = now + check_delay(row.check_count + 1)
                else:
                    row.next_check_at = None
                    log.error("still pending after every status check; left for review", transaction=row.id)
            return [(row.id, row.payment_intent_id) for row in rows]

    async def cancel(
        self, principal: Principal, intent_id: str, request: PaymentIntentCancel
    ) -> PaymentIntent:
        require(principal, Operation.PAYMENT_INTENTS_CANCEL)
        async with self._db.unit_of_work() as session:
            intent = await self._find(session, principal, intent_id, lock=True)
            if principal.payment_token_hash is not None:
                await self._tokens.consume(session, principal.payment_token_hash)
            self._require_transition(intent, PaymentStatus.CANCELLED)
            attempt = await self._pending_attempt(session, intent.id)
            if attempt is None or attempt.provider_name is None:
                intent.cancellation_reason = request.cancellation_reason
                self._transition(session, intent, PaymentStatus.CANCELLED, "cancelled")
                await self._bookings.released(session, intent)
                return intent
            # A code is out there: the provider must stop it before the intent is cancelled.
            provider, credentials, reference = await self._route(session, intent, attempt.provider_name)
        try:
            await self._call(provider.cancel_payment(credentials, reference))
        except ProviderError as exc:
            raise ProviderCallFailed(f"{provider.name} did not confirm the cancellation: {exc}") from exc
        async with self._db.unit_of_work() as session:
            intent = await self._find(session, principal, intent_id, lock=True)
            pending = await self._pending_attempt(session, intent.id)
            if intent.status == PaymentStatus.SUCCEEDED.value:
                # A status check recorded the payment as completed while the provider was cancelling it; the
                # provider's cancel reversed it, so the money went back: say so, as a full refund.
                await self._record_reversal(session, intent)
                return intent
            if not can_transition(PaymentStatus(intent.status), PaymentStatus.CANCELLED):
                return intent  # the provider's answer settled it meanwhile
            if pending is not None:
                self._settle_attempt(
                    pending,
                    TransactionStatus.FAILED,
                    self._clock.now(),
                    "cancelled",
                    request.cancellation_reason,
                )
            intent.cancellation_reason = request.cancellation_reason
            self._transition(session, intent, PaymentStatus.CANCELLED, "cancelled")
            await self._bookings.released(session, intent)
            return intent

    async def _record_reversal(self, session: AsyncSession, intent: PaymentIntent) -> None:
        remaining = intent.amount_captured - intent.amount_refunded
        if remaining <= 0:
            return
        log.warning(
            "a payment completed while it was being cancelled; the provider reversed it", intent=intent.id
        )
        reversal = self._new_transaction(intent, TransactionType.REFUND, remaining)
        reversal.provider_name = intent.provider_name
        reversal.reason = "reversed by the cancellation that raced the payment"
        session.add(reversal)
        await self._bookings.refund_requested(session, intent, reversal)
        await self._settle_refund(
            session,
            intent,
            reversal,
            # The provider reversed the payment itself: its settlement file names the payment's own id.
            ProviderRefund(ProviderRefundStatus.SUCCEEDED, intent.provider_transaction_id),
        )

    # ------------------------------------------------------------------ capture and refund (server)

    async def capture(
        self, principal: Principal, intent_id: str, request: PaymentIntentCapture
    ) -> PaymentIntent:
        require(principal, Operation.PAYMENT_INTENTS_CAPTURE)
        async with self._db.unit_of_work() as session:
            intent = await self._find(session, principal, intent_id, lock=True)
            if ProcessingMode(intent.processing_mode) is ProcessingMode.PGW_PROCESSED:
                raise CaptureNotAllowed("This intent is processed by its provider; confirm it instead.")
            amount = request.amount if request.amount is not None else intent.amount
            if amount > intent.amount:
                raise CaptureAmountTooLarge(f"At most {intent.amount} {intent.currency} can be captured.")
            target = {
                "success": PaymentStatus.SUCCEEDED,
                "declined": PaymentStatus.FAILED,
                "error": PaymentStatus.FAILED,
                "cancelled": PaymentStatus.CANCELLED,
            }[request.status]
            self._require_transition(intent, target)
            record = self._new_transaction(intent, TransactionType.CAPTURE, amount)
            record.approval_code = request.approval_code
            record.card_last_4 = request.card_last_4
            record.card_slip_number = request.card_slip_number
            if target is PaymentStatus.SUCCEEDED:
                record.status = TransactionStatus.SUCCEEDED.value
                intent.amount_captured = amount
            else:
                record.status = TransactionStatus.FAILED.value
                record.failure_code = {"declined": "card_declined", "error": "terminal_error"}.get(
                    request.status, "cancelled_at_terminal"
                )
                record.failure_message = request.error_message
                if target is PaymentStatus.FAILED:
                    intent.failure_code, intent.failure_message = record.failure_code, record.failure_message
                else:
                    intent.cancellation_reason = request.error_message
            session.add(record)
            self._transition(session, intent, target, f"captured_{request.status}")
            if target is PaymentStatus.SUCCEEDED:
                await self._bookings.succeeded(session, intent, amount)
            else:
                await self._bookings.released(session, intent)
            return intent

    async def refund(self, principal: Principal, intent_id: str, request: RefundCreate) -> Transaction:
        require(principal, Operation.PAYMENT_INTENTS_REFUND)
        async with self._db.unit_of_work() as session:
            intent = await self._find(session, principal, intent_id, lock=True)
            if intent.status != PaymentStatus.SUCCEEDED.value:
                raise InvalidStateTransition(
                    f"Only succeeded payment intents can be refunded; this one is {intent.status}.",
                    current_status=intent.status,
                )
            pending = (
                await session.execute(
                    select(func.coalesce(func.sum(Transaction.amount), 0)).where(
                        Transaction.payment_intent_id == intent.id,
                        Transaction.type == TransactionType.REFUND.value,
                        Transaction.status == TransactionStatus.PENDING.value,
                    )
                )
            ).scalar_one()
            refundable = intent.amount_captured - intent.amount_refunded - int(pending)
            amount = request.amount if request.amount is not None else refundable
            if refundable <= 0 or amount > refundable:
                raise RefundExceedsCaptured(
                    f"{refundable} {intent.currency} is left to refund.", refundable_amount=max(refundable, 0)
                )
            refund = self._new_transaction(intent, TransactionType.REFUND, amount)
            refund.reason = request.reason
            refund.provider_name = intent.provider_name
            session.add(refund)
            await self._bookings.refund_requested(session, intent, refund)
            self._audit.record(
                session,
                principal,
                AuditAction.PAYMENT_REFUNDED,
                AuditObject(
                    "payment_intent", intent.id, intent.client_partner_id, intent.merchant_id, intent.store_id
                ),
                details={"refund_id": refund.id, "amount": amount, "currency": intent.currency},
            )
            if ProcessingMode(intent.processing_mode) is not ProcessingMode.PGW_PROCESSED:
                # The terminal or cashier paid it back; paymux records it.
                await self._settle_refund(
                    session, intent, refund, ProviderRefund(ProviderRefundStatus.SUCCEEDED, None)
                )
                return refund
            if intent.provider_name is None:
                raise ProviderNotConfigured("This payment has no provider to refund through.")
            provider, credentials, reference = await self._route(session, intent, intent.provider_name)
            provider_request = RefundRequest(
                refund_id=refund.id,
                payment=reference,
                amount=amount,
                reason=request.reason,
                previously_refunded=intent.amount_refunded,
            )
            # Checked with the provider later if its answer is lost; cleared when the refund settles.
            refund.next_check_at = self._clock.now() + check_delay(1)
        try:
            result = await self._call(provider.refund_payment(credentials, provider_request))
        except ProviderTimeout as exc:
            log.warning(
                "refund timed out at the provider; it stays pending", refund=refund.id, error=str(exc)
            )
            return refund
        except ProviderError as exc:
            result = ProviderRefund(
                ProviderRefundStatus.FAILED, None, failure_code=exc.code, failure_message=str(exc)[:500]
            )
        return await self.record_refund_result(refund.id, result)

    async def record_refund_result(self, refund_id: str, result: ProviderRefund) -> Transaction:
        async with self._db.unit_of_work() as session:
            refund = await session.get(Transaction, refund_id, with_for_update=True)
            if refund is None:
                raise TransactionNotFound(f"No refund {refund_id}.")
            intent = await session.get(PaymentIntent, refund.payment_intent_id, with_for_update=True)
            if intent is None:
                raise PaymentIntentNotFound(f"No payment intent {refund.payment_intent_id}.")
            if refund.status == TransactionStatus.PENDING.value:
                await self._settle_refund(session, intent, refund, result)
            return refund

    async def _settle_refund(
        self, session: AsyncSession, intent: PaymentIntent, refund: Transaction, result: ProviderRefund
    ) -> None:
        now = self._clock.now()
        match result.status:
            case ProviderRefundStatus.SUCCEEDED:
                refund.status = TransactionStatus.SUCCEEDED.value
                refund.next_check_at = None
                refund.provider_transaction_id = result.provider_refund_id
                intent.amount_refunded += refund.amount
                intent.updated_at = now
                event_type = "refund.succeeded"
                await self._bookings.refund_succeeded(session, intent, refund)
            case ProviderRefundStatus.FAILED:
                refund.status = TransactionStatus.FAILED.value
                refund.next_check_at = None
                refund.failure_code = result.failure_code or "refund_failed"
                refund.failure_message = result.failure_message
                event_type = "refund.failed"
                await self._bookings.refund_failed(session, intent, refund)
            case ProviderRefundStatus.PENDING:
                return
            case _ as unreachable:
                assert_never(unreachable)
        refund.updated_at = now
        session.add(self._event(event_type, "refund", refund, TransactionOut.of(refund)))

    # ------------------------------------------------------------------ transactions

    async def list_transactions(
        self, principal: Principal, intent_id: str, *, limit: int, starting_after: str | None
    ) -> tuple[list[Transaction], bool]:
        require(principal, Operation.PAYMENT_INTENTS_READ)
        async with self._db.reading() as session:
            await self._find(session, principal, intent_id)
            statement = select(Transaction).where(Transaction.payment_intent_id == intent_id)
            if starting_after is not None:
                statement = statement.where(Transaction.id < starting_after)
            rows = list(
                (await session.execute(statement.order_by(Transaction.id.desc()).limit(limit + 1))).scalars()
            )
        return rows[:limit], len(rows) > limit

    async def get_transaction(self, principal: Principal, transaction_id: str) -> Transaction:
        require(principal, Operation.PAYMENT_INTENTS_READ)
        async with self._db.reading() as session:
            statement = principal.scope(
                select(Transaction).where(Transaction.id == transaction_id), Transaction
            )
            if principal.payment_intent_id is not None:
                statement = statement.where(Transaction.payment_intent_id == principal.payment_intent_id)
            txn = (await session.execute(statement)).scalar_one_or_none()
        if txn is None:
            raise TransactionNotFound(f"No transaction {transaction_id} in this client's scope.")
        return txn

    # ------------------------------------------------------------------ settled transactions (reconciliation)

    async def settled_transactions(
        self,
        provider: str,
        scope: TenantScope,
        *,
        provider_transaction_ids: Sequence[str] = (),
        references: Sequence[str] = (),
    ) -> list[SettledTransaction]:
        """Succeeded payments and refunds of a provider, found by the provider's ids or by paymux's own (the intent
        id of a payment, the id of a refund)."""
        if not provider_transaction_ids and not references:
            return []
        conditions: list[ColumnElement[bool]] = []
        if provider_transaction_ids:
            conditions.append(Transaction.provider_transaction_id.in_(provider_transaction_ids))
        if references:
            # A payment is known by its intent's id; a refund by its own, or (at providers that key refunds by
            # the original order) by its intent's.
            conditions.append(Transaction.payment_intent_id.in_(references))
            conditions.append(
                and_(Transaction.type == TransactionType.REFUND.value, Transaction.id.in_(references))
            )
        statement = self._settled(provider, scope).where(or_(*conditions))
        async with self._db.reading() as session:
            return [SettledTransaction.of(row) for row in (await session.execute(statement)).scalars()]

    async def settled_between(
        self,
        provider: str,
        scope: TenantScope,
        *,
        start: datetime,
        end: datetime,
        after_id: str | None,
        limit: int,
    ) -> list[SettledTransaction]:
        """Succeeded payments and refunds of a provider settled in [start, end), in id order from `after_id`."""
        statement = self._settled(provider, scope).where(
            Transaction.updated_at >= start, Transaction.updated_at < end
        )
        if after_id is not None:
            statement = statement.where(Transaction.id > after_id)
        async with self._db.reading() as session:
            rows = (await session.execute(statement.order_by(Transaction.id).limit(limit))).scalars()
            return [SettledTransaction.of(row) for row in rows]

    @staticmethod
    def _settled(provider: str, scope: TenantScope) -> Select[Transaction]:
        statement = select(Transaction).where(
            Transaction.provider_name == provider,
            Transaction.status == TransactionStatus.SUCCEEDED.value,
            Transaction.type.in_([TransactionType.PAYMENT.value, TransactionType.REFUND.value]),
        )
        if scope.client_partner_id is not None:
            statement = statement.where(Transaction.client_partner_id == scope.client_partner_id)
        if scope.merchant_id is not None:
            statement = statement.where(Transaction.merchant_id == scope.merchant_id)
        return statement

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _intent_in_scope(principal: Principal, intent_id: str) -> Select[PaymentIntent]:
        """The select of one intent, restricted to what the caller (or its payment token) may see."""
        if principal.payment_intent_id is not None and principal.payment_intent_id != intent_id:
            raise PaymentIntentNotFound(f"No payment intent {intent_id} for this payment token.")
        return principal.scope(select(PaymentIntent).where(PaymentIntent.id == intent_id), PaymentIntent)

    async def _find(
        self, session: AsyncSession, principal: Principal, intent_id: str, *, lock: bool = False
    ) -> PaymentIntent:
        statement = self._intent_in_scope(principal, intent_id)
        if lock:
            statement = statement.with_for_update()
        intent = (await session.execute(statement)).scalar_one_or_none()
        if intent is None:
            raise PaymentIntentNotFound(f"No payment intent {intent_id} in this client's scope.")
        return intent

    async def _find_to_confirm(
        self, session: AsyncSession, principal: Principal, intent_id: str
    ) -> tuple[PaymentIntent, str | None]:
        """As `_find(lock=True)`, with the id of the intent's pending payment attempt (None when there is none)
        read in the same round trip; only the intent is locked."""
        statement = (
            self._intent_in_scope(principal, intent_id)
            .add_columns(Transaction.id)
            .outerjoin(Transaction, _pending_payment_of(PaymentIntent.id))
            .limit(1)
            .with_for_update(of=PaymentIntent)
        )
        row = (await session.execute(statement)).one_or_none()
        if row is None:
            raise PaymentIntentNotFound(f"No payment intent {intent_id} in this client's scope.")
        return row[0], row[1]

    def _require_transition(self, intent: PaymentIntent, target: PaymentStatus) -> None:
        current = PaymentStatus(intent.status)
        if not can_transition(current, target):
            raise InvalidStateTransition(
                f"A payment intent in status {current} cannot become {target}.",
                current_status=current.value,
            )

    def _transition(
        self, session: AsyncSession, intent: PaymentIntent, target: PaymentStatus, reason: str
    ) -> None:
        """The one place a status changes: history row and outbox event go into the same unit of work."""
        self._require_transition(intent, target)
        previous = intent.status
        intent.status = target.value
        intent.updated_at = self._clock.now()
        if target is not PaymentStatus.REQUIRES_ACTION:
            intent.next_action = None
        session.add(self._history(intent, previous, reason))
        self._emit_intent(session, intent, event_type_for(target))

    def _history(self, intent: PaymentIntent, previous: str | None, reason: str) -> PaymentIntentStatusChange:
        return PaymentIntentStatusChange(
            id=new_id("psc"),
            payment_intent_id=intent.id,
            merchant_id=intent.merchant_id,
            from_status=previous,
            to_status=intent.status,
            reason=reason,
            created_at=self._clock.now(),
        )

    def _emit_intent(self, session: AsyncSession, intent: PaymentIntent, event_type: str) -> None:
        session.add(self._intent_event(intent, event_type))

    def _intent_event(self, intent: PaymentIntent, event_type: str) -> Event:
        return self._event(event_type, "payment_intent", intent, PaymentIntentOut.of(intent))

    def _event(
        self, event_type: str, object_type: str, row: PaymentIntent | Transaction, payload: BaseModel
    ) -> Event:
        """An event about an intent or one of its transactions, owned by the same tenant."""
        return self._events.new_event(
            type=event_type,
            object_type=object_type,
            object_id=row.id,
            payload=payload.model_dump(mode="json"),
            client_partner_id=row.client_partner_id,
            merchant_id=row.merchant_id,
            store_id=row.store_id,
        )

    def _new_transaction(self, intent: PaymentIntent, kind: TransactionType, amount: int) -> Transaction:
        now = self._clock.now()
        return Transaction(
            id=new_id("txn"),
            payment_intent_id=intent.id,
            client_partner_id=intent.client_partner_id,
            merchant_id=intent.merchant_id,
            store_id=intent.store_id,
            type=kind.value,
            status=TransactionStatus.PENDING.value,
            amount=amount,
            currency=intent.currency,
            created_at=now,
            updated_at=now,
        )

    def _provider(self, name: str, method: PaymentMethodType) -> PaymentProvider:
        if name not in self._providers:
            raise UnknownProvider(f"No provider {name!r}; known: {', '.join(self._providers.names())}.")
        provider = self._providers.get(name)
        if method not in provider.payment_methods:
            raise PaymentMethodNotSupported(f"{name} does not take {method.value} payments.")
        return provider

    async def _select_provider(
        self, session: AsyncSession, intent: PaymentIntent, requested: str | None
    ) -> tuple[PaymentProvider, ProviderConfig]:
        method = PaymentMethodType(intent.payment_method_type)
        name = requested or intent.provider_name
        configs = await self._tenants.active_provider_configs(session, intent.store_id)
        if name is not None:
            provider = self._provider(name, method)
            config = next((config for config in configs if config.provider_code == name), None)
            if config is None:
                raise ProviderNotConfigured(f"Store {intent.store_id} has no active {name} configuration.")
            return provider, config
        candidates = [
            config
            for config in configs
            if config.provider_code in self._providers
            and method in self._providers.get(config.provider_code).payment_methods
        ]
        if not candidates:
            raise ProviderNotConfigured(f"Store {intent.store_id} has no active provider for {method.value}.")
        if len(candidates) > 1:
            names = ", ".join(config.provider_code for config in candidates)
            raise ProviderAmbiguous(
                f"Store {intent.store_id} has several providers for {method.value}: {names}."
            )
        return self._providers.get(candidates[0].provider_code), candidates[0]

    async def _route(
        self, session: AsyncSession, intent: PaymentIntent, provider_name: str
    ) -> tuple[PaymentProvider, ProviderCredentials, PaymentReference]:
        """The provider, the store's credentials for it (decrypted for this call), and the payment as it knows it."""
        config = await self._tenants.provider_config(session, intent.store_id, provider_name)
        if provider_name not in self._providers or config is None:
            raise ProviderNotConfigured(
                f"Store {intent.store_id} has no {provider_name} configuration paymux can use."
            )
        reference = PaymentReference(
            intent.id,
            intent.provider_transaction_id,
            intent.amount,
            intent.currency,
            intent.provider_reference,
        )
        return self._providers.get(provider_name), self._tenants.credentials(config), reference

    async def _call(self, call: Awaitable[T]) -> T:
        """A provider call with paymux's deadline on top of the adapter's own; no answer in time is a timeout."""
        try:
            return await asyncio.wait_for(call, self.provider_timeout)
        except TimeoutError as exc:
            raise ProviderTimeout(f"no answer within {self.provider_timeout} s") from exc
