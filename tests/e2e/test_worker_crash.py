"""Nothing committed is ever lost: workers delivering thousands of events are SIGKILLed again and again, and
every committed event still reaches the receiver (at least once; duplicates are counted and reported)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from paymux.container import Container
from paymux.events.models import Event
from paymux.gateway.principal import CallerType, Principal
from paymux.payments.schemas import PaymentIntentCreate
from paymux.webhooks.models import DeliveryStatus, WebhookDelivery
from tests.conftest import REDIS_URL, TEST_MASTER_KEY
from tests.support import ServerClient, Tenant
from tests.webhooks.receiver import running_receiver

WORKERS = 3
ENDPOINTS = 4
PAYMENTS = 1500
KILLS = 15


def start_worker(database_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")},
        "PAYMUX_DATABASE_URL": database_url,
        "PAYMUX_MASTER_KEY": TEST_MASTER_KEY,
        "PAYMUX_WEBHOOKS_ALLOW_PRIVATE": "true",
        "PAYMUX_WEBHOOK_LEASE_SECONDS": "2",
        "PAYMUX_WORKER_POLL_SECONDS": "0.1",
        "PAYMUX_LOG_LEVEL": "WARNING",
    }
    if REDIS_URL:
        env["PAYMUX_REDIS_URL"] = REDIS_URL
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "paymux", "worker"], env=env, stdout=log, stderr=log)


@pytest.mark.postgres
@pytest.mark.slow
async def test_sigkilled_workers_lose_no_committed_event(
    container: Container,
    server: ServerClient,
    tenant: Tenant,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(20261121)
    async with running_receiver(path="/") as receiver:
        base = receiver.url.rstrip("/")
        for number in range(ENDPOINTS):
            response = await server.post(
                "/v1/webhook_endpoints",
                {"url": f"{base}/endpoint-{number}", "events": ["payment_intent.created"]},
            )
            assert response.status_code == 201, response.text
        workers = [start_worker(database_url, tmp_path / f"worker-{number}.log") for number in range(WORKERS)]
        principal = Principal(
            caller_type=CallerType.API_CLIENT,
            caller_id=tenant.client_id,
            client_partner_id=tenant.client_partner_id,
            merchant_id=tenant.merchant_id,
        )

        async def create_payments() -> None:
            for start in range(0, PAYMENTS, 25):
                await asyncio.gather(
                    *(
                        container.payments.create(
                            principal,
                            PaymentIntentCreate(
                                merchant_ref_id=f"CRASH-{index}",
                                amount=100 + index,
                                currency="JPY",
                                store_id=tenant.store_id,
                                payment_method_type="credit_card",  # type: ignore[arg-type]
                            ),
                        )
                        for index in range(start, min(start + 25, PAYMENTS))
                    )
                )

        async def kill_workers() -> int:
            kills = 0
            while kills < KILLS:
                await asyncio.sleep(rng.uniform(0.3, 1.0))
                victim = rng.randrange(WORKERS)
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = start_worker(database_url, tmp_path / f"worker-{victim}.log")
                kills += 1
            return kills

        started = time.monotonic()
        try:
            _, kills = await asyncio.gather(create_payments(), kill_workers())
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                async with container.db.reading() as session:
                    pending = (
                        await session.execute(
                            select(func.count()).where(
                                WebhookDelivery.status != DeliveryStatus.SUCCEEDED.value
                            )
                        )
                    ).scalar_one()
                    unrelayed = (
                        await session.execute(select(func.count()).where(Event.relayed_at.is_(None)))
                    ).scalar_one()
                if pending == 0 and unrelayed == 0:
                    break
                await asyncio.sleep(0.5)
        finally:
            for process in workers:
                process.send_signal(signal.SIGTERM)
            for process in workers:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        elapsed = time.monotonic() - started

        async with container.db.reading() as session:
            committed = set(
                (
                    await session.execute(select(Event.id).where(Event.type == "payment_intent.created"))
                ).scalars()
            )
        received = Counter(
            (request.path, request.headers["webhook-id"])
            for request in receiver.received
            if json.loads(request.body)["type"] == "payment_intent.created"
        )
        expected = {
            (f"/endpoint-{number}", event_id) for number in range(ENDPOINTS) for event_id in committed
        }
        missing = expected - set(received)
        duplicates = sum(count - 1 for count in received.values())
        with capsys.disabled():
            sys.stderr.write(
                f"\n[crash test] {len(committed)} events x {ENDPOINTS} endpoints = {len(expected)} deliveries, "
                f"{WORKERS} workers, {kills} SIGKILLs, {elapsed:.1f} s: missing {len(missing)}, "
                f"duplicates {duplicates} ({duplicates / len(expected):.2%})\n"
            )
        assert len(committed) == PAYMENTS
        assert not missing, f"{len(missing)} committed deliveries never arrived"
        assert duplicates / len(expected) < 0.05
