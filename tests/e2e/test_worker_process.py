"""`paymux worker` as an operator runs it: it delivers, and SIGTERM stops it cleanly with its leases released."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlalchemy import select

from paymux.container import Container
from paymux.webhooks.models import WebhookEndpoint
from tests.conftest import ON_POSTGRES, REDIS_URL, TEST_MASTER_KEY
from tests.support import ServerClient, Tenant
from tests.webhooks.receiver import Reply, running_receiver


async def test_sigterm_finishes_in_flight_work_and_exits(
    container: Container, server: ServerClient, tenant: Tenant, database_url: str, tmp_path: Path
) -> None:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")},
        "PAYMUX_DATABASE_URL": database_url,
        "PAYMUX_MASTER_KEY": TEST_MASTER_KEY,
        "PAYMUX_WEBHOOKS_ALLOW_PRIVATE": "true",
        "PAYMUX_WORKER_POLL_SECONDS": "0.1",
    }
    if ON_POSTGRES and REDIS_URL:
        env["PAYMUX_REDIS_URL"] = REDIS_URL
    async with running_receiver() as receiver:
        receiver.default = Reply(200, delay=1.0)  # slow, so SIGTERM lands while a request is in flight
        assert (await server.post("/v1/webhook_endpoints", {"url": receiver.url})).status_code == 201
        await server.create_intent(tenant)
        log_path = tmp_path / "worker.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "paymux", "worker", env=env, stdout=log, stderr=log
            )
        try:
            for _ in range(600):
                if receiver.received:
                    break
                await asyncio.sleep(0.05)
            assert receiver.received, log_path.read_text()
            process.send_signal(signal.SIGTERM)
            exit_code = await asyncio.wait_for(process.wait(), timeout=30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert exit_code == 0, log_path.read_text()
        assert len(receiver.received) == 1  # it took nothing new after SIGTERM
    async with container.db.reading() as session:
        endpoint = (await session.execute(select(WebhookEndpoint))).scalar_one()
    assert endpoint.lease_owner is None
    deliveries = (await server.get(f"/v1/webhook_endpoints/{endpoint.id}/deliveries")).json()["data"]
    assert deliveries[0]["status"] == "succeeded"  # the request in flight finished and was recorded
    assert "worker stopped" in log_path.read_text()
