"""The sandboxes' settlement files reconcile cleanly against what paymux recorded, and the worker's daily run
fetches and imports PayPay's, once per store and day, retrying a failed fetch later."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from paymux.core.clock import FrozenClock
from paymux.payments.service import TenantScope
from paymux.providers.settlement import LAYOUTS
from paymux.reconciliation.models import ReconciliationRun, ScheduledReconciliation
from paymux.reconciliation.service import DAILY_ATTEMPTS, DAILY_RETRY_AFTER, ImportRequest
from paymux.tenants.schemas import ProviderConfigSync
from tests.providers.test_settlement_files import PROVIDERS, SPECS, World, every_provider, today, world

__all__ = ["world"]  # the fixture, shared with the settlement file tests


async def _daily(world: World, *, secret: str | None = None) -> None:
    """Turn the daily run on for the world's store (optionally with a wrong API secret)."""
    credentials = dict(world.spec.credentials)
    if secret is not None:
        credentials["api_secret"] = secret
    await world.container.tenants.configure_provider(
        world.tenant.store_id,
        ProviderConfigSync.model_validate(
            {
                "provider_code": world.spec.name,
                "credentials": credentials,
                "base_url": world.sandbox_url,
                "webhook_secret": world.spec.defaults.webhook_secret,
                "options": {"settlement_files": "daily"},
            }
        ),
    )


@every_provider()
async def test_a_days_sandbox_file_reconciles_without_exceptions(world: World, tmp_path: Path) -> None:
    first = await world.paid(1200)
    second = await world.paid(3400)
    await world.refund(first, 500)
    await world.refund(first, 300)  # two partial refunds of one payment
    await world.refund(second)
    path = tmp_path / "settlement.csv"
    path.write_text(await world.file(today()))
    result = await world.container.reconciliation.import_file(
        ImportRequest(
            path=path,
            provider=world.spec.name,
            scope=TenantScope(world.tenant.client_partner_id, world.tenant.merchant_id),
            source="cli",
            created_by="test",
        )
    )
    run = result.run
    assert (run.lines, run.matched) == (5, 5), (world.spec.name, run.__dict__)
    assert (
        run.missing_in_paymux,
        run.missing_in_file,
        run.amount_mismatch,
        run.currency_mismatch,
        run.duplicates,
    ) == (0, 0, 0, 0, 0)


@every_provider(("paypay",))
async def test_the_daily_run_imports_yesterdays_file_once_per_store(world: World) -> None:
    await world.paid(1500)
    await world.paid(2500)
    reconciliation, tenants, providers = (
        world.container.reconciliation,
        world.container.tenants,
        world.container.providers,
    )
    # Without the option, the store is left alone.
    assert await reconciliation.run_daily(tenants, providers, today()) == 0
    await _daily(world)
    assert await reconciliation.run_daily(tenants, providers, today()) == 1
    assert await reconciliation.run_daily(tenants, providers, today()) == 0  # claimed: once per store and day
    async with world.container.db.reading() as session:
        runs = list((await session.execute(select(ReconciliationRun))).scalars())
        claim = (await session.execute(select(ScheduledReconciliation))).scalar_one()
    assert len(runs) == 1
    [run] = runs
    assert (run.source, run.provider, run.merchant_id, run.lines, run.matched) == (
        "schedule",
        "paypay",
        world.tenant.merchant_id,
        2,
        2,
    )
    assert claim.run_id == run.id
    assert LAYOUTS["paypay"].header == (await world.file(today())).splitlines()[0].split(",")


@every_provider(("paypay",))
async def test_a_failed_fetch_is_retried_later_and_given_up_after_a_few_attempts(world: World) -> None:
    await world.paid(1500)
    await _daily(world, secret="not-the-secret")
    reconciliation, tenants, providers = (
        world.container.reconciliation,
        world.container.tenants,
        world.container.providers,
    )
    clock = world.container.clock
    assert isinstance(clock, FrozenClock)
    started = clock.now()
    assert await reconciliation.run_daily(tenants, providers, today()) == 0
    assert await reconciliation.run_daily(tenants, providers, today()) == 0  # not again before an hour
    for _ in range(DAILY_ATTEMPTS + 2):
        clock.advance(DAILY_RETRY_AFTER + timedelta(seconds=1))
        assert await reconciliation.run_daily(tenants, providers, today()) == 0
    async with world.container.db.reading() as session:
        claim = (await session.execute(select(ScheduledReconciliation))).scalar_one()
        runs = list((await session.execute(select(ReconciliationRun))).scalars())
    assert (claim.attempts, claim.run_id, runs) == (DAILY_ATTEMPTS, None, [])
    # Fixed credentials do not revive a day that ran out of attempts; another day runs. (Back to the real time:
    # PayPay refuses a signature whose epoch is off by more than two minutes.)
    clock.set(started)
    await _daily(world)
    assert await reconciliation.run_daily(tenants, providers, today()) == 0
    assert await reconciliation.run_daily(tenants, providers, today() - timedelta(days=1)) == 1


def test_every_sandbox_provider_has_a_layout() -> None:
    assert set(PROVIDERS) <= set(LAYOUTS)
    assert set(SPECS) == set(PROVIDERS)
