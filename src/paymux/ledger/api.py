"""A merchant's balance and the postings behind it (server, HMAC)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from paymux.core.errors import problem_responses
from paymux.core.inputs import ID_PATTERN
from paymux.core.pagination import Limit, StartingAfter
from paymux.gateway.auth import Caller, container_of
from paymux.ledger.entries import EntryKind
from paymux.ledger.schemas import BalanceOut, BalanceTransactionList, BalanceTransactionOut

router = APIRouter(prefix="/v1", tags=["balances"], responses=problem_responses(401, 403, 413, 429, 503))

MerchantQuery = Annotated[
    int | None,
    Query(gt=0, lt=2**53, description="The merchant, for partner clients (merchant clients see their own)"),
]


@router.get(
    "/balances",
    response_model=BalanceOut,
    summary="A merchant's available and pending balance per currency (server, HMAC)",
    responses=problem_responses(404, 422),
)
async def retrieve_balance(request: Request, caller: Caller, merchant_id: MerchantQuery = None) -> BalanceOut:
    container = container_of(request)
    if merchant_id is not None and caller.store_id is None:
        await container.tenants.merchant_in_scope(caller, merchant_id)
    merchant, balances = await container.ledger.balances(caller, merchant_id)
    return BalanceOut.of(merchant, balances)


@router.get(
    "/balance_transactions",
    response_model=BalanceTransactionList,
    summary="List the movements of a merchant's balance, newest first (server, HMAC)",
    responses=problem_responses(404, 422),
)
async def list_balance_transactions(
    request: Request,
    caller: Caller,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    merchant_id: MerchantQuery = None,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$", description="Only this currency")] = None,
    type: Annotated[EntryKind | None, Query(description="Only movements of this type")] = None,
    source: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, description="Only movements caused by this object (pi_..., txn_...)"),
    ] = None,
) -> BalanceTransactionList:
    container = container_of(request)
    if merchant_id is not None and caller.store_id is None:
        await container.tenants.merchant_in_scope(caller, merchant_id)
    rows, has_more = await container.ledger.balance_transactions(
        caller,
        merchant_id=merchant_id,
        currency=currency,
        kind=type.value if type is not None else None,
        source_id=source,
        limit=limit,
        starting_after=starting_after,
    )
    return BalanceTransactionList(
        data=[BalanceTransactionOut.of(posting, entry) for posting, entry in rows], has_more=has_more
    )
